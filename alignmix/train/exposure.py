"""What a training stage's model actually saw of its mixture: `RUN/STAGE/exposure.json`.

The mixture stage writes `tokens // block_size` samples of `block_size = seq_len + 1` tokens; litgpt reads them
in a shuffled order for its `max_tokens` and starts another pass over them when it asks for more samples than
were written. The samples it consumed come from litgpt's own metrics (`samples` in `logs/csv/*/metrics.csv`,
the latest over a resumed run's versions). Per source, the tokens seen are the written tokens scaled by the
passes made: the written chunks are one seeded shuffle of the whole mixture, so every source is spread evenly
over them; the share of a partial pass is an estimate, whole passes are exact.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from loguru import logger

from alignmix.outputs import METRICS_FILE, Mixture, ModelOutput


def samples_seen(stage_dir: Path) -> int | None:
    """The samples litgpt's training loop consumed, from its CSV metrics (None when it logged none)."""
    seen = None
    for metrics in sorted(stage_dir.glob(f"logs/csv/version_*/{METRICS_FILE}")):
        with metrics.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("samples"):
                    seen = max(seen or 0, int(float(row["samples"])))
    return seen


def exposure(mixture_manifest: dict[str, Any], seen: int, micro_batch_size: int) -> dict[str, Any]:
    """The exposure record of a stage: written and seen samples and tokens, passes, and per source."""
    block = mixture_manifest["block_size"]
    written = mixture_manifest["tokens"] // block
    passes = seen / written if written else 0.0
    mismatch = seen - written
    warning = None
    if abs(mismatch) > micro_batch_size:
        what = "read again (a second pass over the first ones)" if mismatch > 0 else "never read"
        warning = (f"litgpt consumed {seen:,} samples of {block:,} tokens but the mixture wrote {written:,}:"
                   f" {abs(mismatch):,} samples {what}, more than one micro-batch ({micro_batch_size})")
    return {
        "stage": mixture_manifest["stage"],
        "block_size": block,
        "samples_written": written,
        "samples_seen": seen,
        "passes": round(passes, 6),
        "tokens_written": written * block,
        "tokens_seen": seen * block,
        "warning": warning,
        "method": "samples seen from litgpt's metrics; per source, written tokens x passes (an estimate within"
                  " a partial pass: the chunks are one seeded shuffle of the whole mixture)",
        "sources": [
            {
                "name": source["name"],
                "selection": source.get("selection"),
                "planned_tokens": source["tokens"],
                "written_tokens": source["realised_tokens"],
                "seen_tokens": round(source["realised_tokens"] * passes),
                "documents_used": source["documents_used"],
                "max_document_repetitions_seen": round(source["max_document_repetitions"] * passes, 3),
            }
            for source in mixture_manifest["sources"]
        ],
    }


def write_exposure(stage_dir: Path, mixture_dir: Path, micro_batch_size: int) -> dict[str, Any] | None:
    """Write `stage_dir/exposure.json` (logging its warning, if any) and return it; None without litgpt metrics."""
    seen = samples_seen(stage_dir)
    if seen is None:
        return None
    record = exposure(dict(Mixture(mixture_dir).manifest()), seen, micro_batch_size)
    ModelOutput(stage_dir).exposure_path.write_text(json.dumps(record, indent=2))
    if record["warning"]:
        logger.warning(f"stage '{record['stage']}': {record['warning']}")
    return record
