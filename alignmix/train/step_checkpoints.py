"""Step checkpoints that are whole: each file's sha256 is recorded beside it once it is written
(`FILE.sha256`, written last), and a resume starts from the latest one that still matches."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from alignmix.outputs import ModelOutput


def sha256_of(path: Path) -> str:
    total = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            total.update(block)
    return total.hexdigest()


def hash_file(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".sha256")


def write_sha256(checkpoint: Path) -> None:
    """Record a checkpoint file's sha256 beside it; a step folder without the record was not finished."""
    partial = hash_file(checkpoint).with_suffix(".partial")
    partial.write_text(sha256_of(checkpoint) + "\n")
    partial.replace(hash_file(checkpoint))


def latest_whole_step(out_dir: Path, file_name: str, echo: Callable[[str], None]) -> Path | None:
    """The latest `OUT/step-*/<file_name>` whose sha256 matches its record (a sharded state, a folder, counts
    as whole). Later step folders (unfinished when the stage was stopped, or changed since) are removed,
    saying why."""
    for step in reversed(ModelOutput(out_dir).steps()):
        checkpoint = step / file_name
        recorded = hash_file(checkpoint)
        if checkpoint.is_dir() or (checkpoint.is_file() and recorded.is_file()
                                   and recorded.read_text().strip() == sha256_of(checkpoint)):
            return checkpoint
        reason = "changed since it was written (its sha256 differs)" if recorded.is_file() else "not finished"
        echo(f"warning: {step}: {reason}; removed, resuming from the checkpoint before it")
        shutil.rmtree(step)
    return None
