"""A mixture changed mid-run (`alignmix train --from-step N`): the earlier mixture's first samples, which training
had consumed by step N, then the rest of the stage's tokens re-planned from the same token stores.

The earlier index's pieces up to the kept tokens (the last one cut to fit) come first, unchanged, with their
entries; the re-planned pieces follow, drawn for the remaining tokens under the stage's (changed) mixture, with
their entries numbered after the earlier ones. The manifest's `continued` records where the two meet and the
earlier plan.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alignmix.corpus.plan import PlanError
from alignmix.hashing import derive_seed
from alignmix.outputs import INDEX_COLUMNS, Continuation, Mixture, MixtureIndex
from alignmix.recipe import TrainingStage


def remaining(stage: TrainingStage, continued: Continuation) -> tuple[TrainingStage, int]:
    """The stage to re-plan (its tokens those left after the kept samples) and the tokens kept."""
    record = continued.record
    earlier = Mixture(continued.mixture).manifest()
    if earlier["block_size"] != stage.block_size:
        raise PlanError(f"stage '{stage.name}': the earlier mixture has samples of {earlier['block_size']:,} tokens,"
                        f" this one of {stage.block_size:,}; a mid-run change keeps seq_len")
    kept = record["samples"] * stage.block_size
    if kept >= stage.tokens:
        raise PlanError(f"stage '{stage.name}': by step {record['from_step']:,} training had read {kept:,} tokens,"
                        f" all of the stage's {stage.tokens:,}; nothing is left to re-plan")
    return stage.model_copy(update={"tokens": stage.tokens - kept}), kept


def rest_seed(seed: int, stage: TrainingStage, continued: Continuation) -> int:
    """The seed of the re-planned draw (another draw than the stage's own from the start)."""
    return derive_seed(seed, stage.name, "continued from step", continued.record["from_step"])


def prepend_kept(index: MixtureIndex, continued: Continuation, kept_tokens: int) -> None:
    """Put the earlier index's pieces up to `kept_tokens` before the re-planned pieces in `index`."""
    earlier = MixtureIndex.of(continued.mixture)
    take = np.asarray(earlier.column("take"), dtype=np.int64)
    ends = np.cumsum(take)
    whole = int(np.searchsorted(ends, kept_tokens, side="right"))
    cut = kept_tokens - (int(ends[whole - 1]) if whole else 0)
    rows = whole + (cut > 0)
    rest = {name: np.array(index.column(name)) for name in INDEX_COLUMNS}
    rest_entries = index.entries
    index.allocate(rows + len(rest["take"]))
    for name in INDEX_COLUMNS:
        column = index.writable(name)
        column[:rows] = earlier.column(name)[:rows]
        column[rows:] = rest[name] + (len(earlier.entries) if name == "entry" else 0)
        if name == "take" and cut:
            column[rows - 1] = cut
        column.flush()
        del column
    index.write_entries(earlier.entries + rest_entries)


def continued_manifest(continued: Continuation, kept_tokens: int) -> dict[str, Any]:
    """The manifest's `continued` (where the plans meet and the earlier plan) and the earlier `reads`."""
    earlier = Mixture(continued.mixture).manifest()
    record = continued.record
    return {
        "from_step": record["from_step"], "samples_kept": record["samples"], "tokens_kept": kept_tokens,
        "earlier": {k: earlier.get(k) for k in ("tokens", "seed", "sources", "mixture_index", "continued")},
        "reads": earlier["reads"],
    }
