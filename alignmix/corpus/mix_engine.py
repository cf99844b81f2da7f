"""Tokenizing a mixture's sources as datatrove tasks on an executor (`mixing: {executor: local|ray|slurm}`).

Task i tokenizes the i-th contiguous group of a source's shards and writes its part to disk: the tokens
(`NNNNN.tokens.npy`, end-of-text after each document), the offsets (`NNNNN.offsets.npy`) and the documents' ids,
metadata and contamination flags (`NNNNN.docs.json`), each renamed into place when complete. The mixer then
memory-maps the parts in task order, so the documents, the draw and the chunks are those of the in-process
mixer, whatever the executor or the task count, and no process holds a source's tokens in memory. Parts live in
the stage's output folder (`.tokenized/<source>/`): a killed task reruns alone (datatrove's completion markers),
and a changed stage key, which clears that folder, starts afresh. The tasks' datatrove logs stay, in
`logs/tokenize/<source>/` of the written mixture.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from alignmix.corpus.engines import SlurmSettings, run_pipeline
from alignmix.corpus.mix import TokenizedDocs, tokenize_files
from alignmix.recipe import Executor
from alignmix.scenarios.decontaminate import NgramGuard

WORK_DIR = ".tokenized"


def _save_atomically(path: Path, write) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        write(handle)
    os.replace(partial, path)


class TokenizeShards(PipelineStep):
    """Tokenize the shard group of this task's rank into a part on disk."""

    name = "tokenize"
    type = "🔢 - TOKENIZE"

    def __init__(self, groups: list[list[str]], tokenizer_dir: str, guard: NgramGuard | None, parts_dir: str):
        super().__init__()
        self.groups, self.tokenizer_dir, self.guard, self.parts_dir = groups, tokenizer_dir, guard, parts_dir

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        docs = tokenize_files([Path(f) for f in self.groups[rank]], Path(self.tokenizer_dir), self.guard)
        (flat, offsets), = docs.parts
        stem = Path(self.parts_dir) / f"{rank:05d}"
        _save_atomically(stem.with_suffix(".tokens.npy"), lambda h: np.save(h, flat))
        _save_atomically(stem.with_suffix(".offsets.npy"), lambda h: np.save(h, offsets))
        record = {"ids": docs.ids, "metadata": docs.metadata, "contaminated": docs.contaminated}
        _save_atomically(stem.with_suffix(".docs.json"), lambda h: h.write(json.dumps(record).encode()))
        self.stat_update("documents", value=len(docs.ids))
        self.stat_update("tokens", value=int(len(flat)))
        yield from ()


def read_part(stem: Path) -> TokenizedDocs:
    """A task's part, its tokens memory-mapped."""
    record = json.loads(stem.with_suffix(".docs.json").read_text())
    flat = np.load(stem.with_suffix(".tokens.npy"), mmap_mode="r")
    offsets = np.load(stem.with_suffix(".offsets.npy"))
    return TokenizedDocs(record["ids"], record["metadata"], record["contaminated"], [(flat, offsets)])


@dataclass(frozen=True)
class MixingEngine:
    """Where a stage's tokenizing tasks run, and the stage folder their parts go under."""

    executor: Executor
    work_dir: Path
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def tokenize(self, source: str, groups: list[list[Path]], tokenizer_dir: Path,
                 guard: NgramGuard | None) -> list[TokenizedDocs]:
        """One task per shard group; returns the parts in task order once every task has completed."""
        if not groups:
            return []
        parts_dir = self.work_dir / WORK_DIR / source
        parts_dir.mkdir(parents=True, exist_ok=True)
        step = TokenizeShards([[str(f.resolve()) for f in g] for g in groups], str(tokenizer_dir.resolve()), guard,
                              str(parts_dir.resolve()))
        run_pipeline(self.executor, [step], len(groups), parts_dir / "logs", self.slurm,
                     f"alignmix-mix-{source}", "tokenizing")
        return [read_part(parts_dir / f"{rank:05d}") for rank in range(len(groups))]

    def keep_logs(self, logs_dir: Path) -> None:
        """Move the tasks' datatrove logs (stats, completions, a Slurm launch script) to
        `logs_dir/tokenize/<source>/` before the parts are removed."""
        for source_logs in sorted((self.work_dir / WORK_DIR).glob("*/logs")):
            target = logs_dir / "tokenize" / source_logs.parent.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source_logs, target)
