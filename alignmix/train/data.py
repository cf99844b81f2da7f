"""`MixtureData`: a litgpt `DataModule` that streams a stage's mixture from its index and token stores, with no
copy of the data (`mixing.delivery: stream`); also `litgpt pretrain --data alignmix.train.data.MixtureData
--data.mixture RUN/mix/STAGE`.

- Samples: sample p is tokens [p * B, (p + 1) * B) of the mixture's stream (B = block_size = seq_len + 1, p < N =
  tokens // B): what the chunks hold, in the index's order.
- Sharding: rank r of W reads samples r, r + W, r + 2W, ... in micro-batches of `mb`; the ranks' micro-batch b
  together is samples [b * mb * W, (b + 1) * mb * W). So optimizer step k, of G samples (litgpt's global batch),
  reads exactly samples [k * G, (k + 1) * G), whatever W, devices or nodes.
- A pass: each rank reads N // (W * mb) micro-batches (fewer than W * mb samples at the end are left, as LitData's
  drop_last); when litgpt asks for more, the next pass starts again at sample 0.
- State: the loader's `state_dict` is `{"passes", "samples"}` (samples the ranks consumed in the current pass,
  counted over all ranks), saved by litgpt in each checkpoint as `train_dataloader`; a resume continues at that
  sample, under any W and mb that divide it.
- Workers: worker w of K reads micro-batches w, w + K, ...; the loader takes them round-robin, so in order.
- Validation: the mixture's first samples, in order (as litgpt's LitData without split names validates on its
  training data): a val loss here is not a held-out number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from alignmix.errors import AlignmixError
from alignmix.outputs import MANIFEST_FILE, Mixture, StreamReader


class MixtureDataError(AlignmixError, ValueError):
    """A mixture that cannot be streamed as asked: the message names the folder and the numbers."""


def distributed_place() -> tuple[int, int]:
    """(rank, world size) of this process in the training job; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class MixtureSamples(IterableDataset):
    """One rank's micro-batches of a mixture, from micro-batch `start` to the end of a pass."""

    def __init__(self, mixture: Path, block_size: int, micro_batch: int, rank: int, world: int):
        self.mixture, self.block_size, self.micro_batch = mixture, block_size, micro_batch
        self.rank, self.world = rank, world
        self.samples = Mixture(mixture).manifest()["tokens"] // block_size
        self.start = 0
        self._reader: StreamReader | None = None

    def __len__(self) -> int:
        return self.samples // (self.world * self.micro_batch)

    def batch(self, number: int) -> torch.Tensor:
        """This rank's micro-batch `number` of a pass, as a (micro_batch, block_size) tensor."""
        if self._reader is None:
            self._reader = StreamReader.of(self.mixture)
        first = number * self.micro_batch
        places = (np.arange(first, first + self.micro_batch) * self.world + self.rank) * self.block_size
        return torch.from_numpy(np.stack([self._reader.read(int(p), int(p) + self.block_size) for p in places]))

    def __iter__(self) -> Iterator[torch.Tensor]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for number in range(self.start + worker_id, len(self), workers):
            yield self.batch(number)


class MixtureLoader(DataLoader):
    """A rank's loader of a pass over the mixture, continuing where its state says (see the module docstring)."""

    def __init__(self, dataset: MixtureSamples, num_workers: int):
        super().__init__(dataset, batch_size=None, num_workers=num_workers, pin_memory=torch.cuda.is_available())
        self.passes = 0
        self.batches = 0  # micro-batches handed out in the current pass

    def __iter__(self) -> Iterator[torch.Tensor]:  # type: ignore[override]
        dataset: MixtureSamples = self.dataset  # type: ignore[assignment]
        dataset.start = self.batches
        for batch in super().__iter__():
            self.batches += 1
            yield batch
        self.passes += 1
        self.batches = 0

    def _per_batch(self) -> int:
        dataset: MixtureSamples = self.dataset  # type: ignore[assignment]
        return dataset.micro_batch * dataset.world

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "samples": self.batches * self._per_batch()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "samples" not in state:
            raise MixtureDataError(f"the checkpoint's data state {sorted(state)} is not MixtureData's (was it trained"
                                   " on LitData chunks?); resume with the data module it was trained with")
        if state["samples"] % self._per_batch():
            raise MixtureDataError(f"the checkpoint stopped after {state['samples']:,} samples, not a whole number of"
                                   f" micro-batches of {self._per_batch()} over all ranks; resume with a world size"
                                   " and micro_batch_size that divide it")
        self.passes, self.batches = int(state["passes"]), state["samples"] // self._per_batch()


@dataclass
class MixtureData(DataModule):
    """Streams a written mixture (`RUN/mix/STAGE`: its index and the token stores its manifest names) in order."""

    mixture: Path = Path("mix/pretrain")
    """The mixture folder (holding mixture_manifest.json and mixture_index/)."""
    num_workers: int = 0
    """DataLoader worker processes per rank."""

    batch_size: int = field(init=False, repr=False, default=1)
    block_size: int = field(init=False, repr=False, default=2049)

    def __post_init__(self) -> None:
        super().__init__()

    def connect(self, tokenizer: Tokenizer | None = None, batch_size: int = 1,
                max_seq_length: int | None = None) -> None:
        self.batch_size = batch_size
        self.block_size = (max_seq_length or 2048) + 1  # the next token as well

    def setup(self, stage: str = "") -> None:
        manifest_file = Path(self.mixture) / MANIFEST_FILE
        if not manifest_file.is_file():
            raise MixtureDataError(f"--data.mixture {self.mixture}: no {MANIFEST_FILE} there; expected a mixture folder"
                                   " such as RUN/mix/pretrain")
        written = Mixture(Path(self.mixture)).manifest()["block_size"]
        if written != self.block_size:
            raise MixtureDataError(f"{self.mixture}: the mixture was drawn in samples of {written:,} tokens (seq_len"
                                   f" {written - 1:,}) but training asks for {self.block_size:,}; set"
                                   f" train.max_seq_length to {written - 1:,}")

    def _loader(self, rank: int, world: int) -> MixtureLoader:
        return MixtureLoader(MixtureSamples(Path(self.mixture), self.block_size, self.batch_size, rank, world),
                             self.num_workers)

    def train_dataloader(self) -> MixtureLoader:
        return self._loader(*distributed_place())

    def val_dataloader(self) -> MixtureLoader:
        return self._loader(*distributed_place())
