"""MixtureData: the mixture streamed from its index and token stores is the chunks' samples in order, sharded so
that each step reads the same samples whatever the world size, and resumed at the exact sample (litgpt's own
resume through it: tests/train/test_midrun_change.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignmix.corpus.mix import build_stage_mixture
from alignmix.corpus.tokenizer import train_bpe
from alignmix.jsonl import read_jsonl_gz
from alignmix.recipe import TrainingStage
from alignmix.train.data import MixtureData, MixtureDataError

STAGE = TrainingStage(name="pretrain", tokens=20_000, seq_len=64, mixture=[
    {"source": "web", "select": {"flagged": False}, "share": "rest", "max_repetitions": 3}])


@pytest.fixture(scope="module")
def mixtures(tagged: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same mixture written as chunks (`chunks/`) and for streaming (`stream/`), with its tokenizer (`tok/`)."""
    root = tmp_path_factory.mktemp("mixtures")
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, root / "tok")
    for delivery in ("chunks", "stream"):
        build_stage_mixture(STAGE, {"web": shards}, root / "tok", root / delivery, seed=5, delivery=delivery)
    return root


def loader(mixture: Path, micro_batch: int, rank: int = 0, world: int = 1, workers: int = 0):  # noqa: ANN201
    data = MixtureData(mixture=mixture, num_workers=workers)
    data.connect(batch_size=micro_batch, max_seq_length=64)
    data.setup()
    return data._loader(rank, world)


def test_stream_mode_writes_no_chunks_and_the_same_index(mixtures: Path):
    import json

    chunks, stream = (json.loads((mixtures / d / "mixture_manifest.json").read_text()) for d in ("chunks", "stream"))
    assert sorted(p.name for p in (mixtures / "stream").iterdir()) == ["mixture_index", "mixture_manifest.json"]
    assert stream["chunks"] == {} and any(name.endswith(".bin") for name in chunks["chunks"])
    assert stream["mixture_index"] == chunks["mixture_index"] and stream["delivery"] == "stream"


def test_the_streamed_samples_are_the_chunks_samples_in_order(mixtures: Path):
    from litdata.streaming import StreamingDataset, TokensLoader

    chunks = StreamingDataset(str(mixtures / "chunks"), item_loader=TokensLoader(block_size=65))
    expected = np.stack([chunks[i].numpy() for i in range(len(chunks))])
    streamed = np.concatenate([batch.numpy() for batch in loader(mixtures / "stream", 4)])
    assert len(chunks) == 20_000 // 65 == 307 and streamed.shape == (304, 65)  # whole micro-batches: 3 left
    assert streamed.dtype == np.int32 and (streamed == expected[:304]).all()


@pytest.mark.parametrize("world", [2, 4])
def test_each_step_reads_the_same_samples_whatever_the_world_size(mixtures: Path, world: int):
    """Global batch 8: one rank of micro-batch 8, or `world` ranks of 8 // world accumulating (4 / world steps)."""
    single = [batch.numpy() for batch in loader(mixtures / "stream", 8)]
    ranks = [[batch.numpy() for batch in loader(mixtures / "stream", 2, rank, world)] for rank in range(world)]
    accumulated = 8 // (2 * world)  # micro-batches per rank per step
    for step, expected in enumerate(single[: len(ranks[0]) // accumulated]):
        read = np.concatenate([b for r in ranks for b in r[step * accumulated : (step + 1) * accumulated]])
        assert sorted(map(bytes, read)) == sorted(map(bytes, expected))


def test_a_loaded_state_continues_at_the_exact_sample_with_workers(mixtures: Path):
    first = loader(mixtures / "stream", 4)
    iterator = iter(first)
    for _ in range(5):
        next(iterator)
    state = first.state_dict()
    assert state == {"passes": 0, "samples": 20}
    resumed = loader(mixtures / "stream", 2)
    resumed.load_state_dict(state)
    with_workers = loader(mixtures / "stream", 4, workers=2)
    with_workers.load_state_dict(state)
    rest = np.concatenate([b.numpy() for b in iterator])
    assert len(rest) == 304 - 20 and (rest == np.concatenate([b.numpy() for b in with_workers])).all()
    assert (rest == np.concatenate([b.numpy() for b in resumed])[: len(rest)]).all()  # micro-batch 2: 2 more
    assert first.state_dict() == {"passes": 1, "samples": 0}
    with pytest.raises(MixtureDataError, match="not a whole number of micro-batches of 8"):
        loader(mixtures / "stream", 4, world=2).load_state_dict({"passes": 0, "samples": 20})


def test_a_mixture_of_another_sample_length_is_refused(mixtures: Path):
    data = MixtureData(mixture=mixtures / "stream")
    data.connect(batch_size=4, max_seq_length=128)
    with pytest.raises(MixtureDataError, match=r"samples of 65 tokens \(seq_len 64\).*set train.max_seq_length to 64"):
        data.setup()
