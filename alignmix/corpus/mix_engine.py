"""Writing a mixture's LitData chunks from its index and the token stores, as datatrove tasks on the mixing
executor (`mixing: {executor: local|ray|slurm}`).

Task j writes the j-th contiguous range of whole chunks with LitData's own writer, reading each piece's tokens
from the memory-mapped token stores (a replayed entry's from the earlier mixture's index, the same way), and the
driver merges the tasks' indexes into one index.json. The chunks and the index are byte-identical whatever the
executor or the task count, and no process holds a source's tokens in memory.

Work lives in `<stage>/.chunks/`: a killed task reruns alone (datatrove's completion markers), and a changed
stage key, which clears that folder, starts afresh. The folder records the chunk ranges it was planned with
(`layout.json`); a rerun with another layout (`mixing.tasks` changed, which the key leaves out) clears it. The
tasks' datatrove logs stay in `logs/chunks/` of the written mixture. Progress: the tokens written of the total.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from alignmix.corpus.engines import SlurmSettings, TaskCounts, Watch, clear_unless_planned_as, run_pipeline
from alignmix.hashing import file_sha256
from alignmix.outputs import INDEX_COLUMNS, MixtureIndex, StreamReader
from alignmix.recipe import Executor

ITEM_BLOCKS, CHUNK_BLOCKS = 256, 1024  # blocks per LitData item and per chunk file


class WriteChunks(PipelineStep):
    """Write this task's range of the mixture's chunks from its index."""

    name = "write chunks"
    type = "💾 - WRITER"

    def __init__(self, index_dir: str, stores: dict[str, str], mixtures: dict[str, str], work_dir: str,
                 ranges: list[tuple[int, int]], total: int, block_size: int, progress_dir: str | None = None):
        super().__init__()
        self.index_dir, self.stores, self.mixtures, self.work_dir = index_dir, stores, mixtures, work_dir
        self.ranges, self.total, self.block_size, self.progress_dir = ranges, total, block_size, progress_dir

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import torch
        from litdata.streaming.item_loader import TokensLoader
        from litdata.streaming.writer import BinaryWriter

        stream = StreamReader(Path(self.index_dir), self.stores, self.mixtures)
        first, end = self.ranges[rank]
        task_dir = Path(self.work_dir) / f"{rank:05d}"
        shutil.rmtree(task_dir, ignore_errors=True)
        item, chunk = self.block_size * ITEM_BLOCKS, self.block_size * CHUNK_BLOCKS
        writer = BinaryWriter(str(task_dir), chunk_size=chunk, chunk_index=first,
                              item_loader=TokensLoader(block_size=self.block_size))
        counts = TaskCounts(self.progress_dir, rank)
        with _litdata_rank_zero(), contextlib.redirect_stdout(sys.stderr):  # litdata prints the data format
            # litdata names chunks chunk-RANK-INDEX: these are the one writer's, rank 0
            for index, low in enumerate(range(first * chunk, min(end * chunk, self.total), item)):
                high = min(low + item, self.total)
                writer.add_item(first * (CHUNK_BLOCKS // ITEM_BLOCKS) + index, torch.from_numpy(stream.read(low, high)))
                counts.set(tokens=high - first * chunk)
            writer.done()
        counts.flush()
        self.stat_update("chunks", value=end - first)
        yield from ()


@contextlib.contextmanager
def _litdata_rank_zero() -> Iterator[None]:
    saved = os.environ.get("DATA_OPTIMIZER_GLOBAL_RANK")
    os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["DATA_OPTIMIZER_GLOBAL_RANK"]
        else:
            os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = saved


def write_chunks(index_dir: Path, stores: dict[str, str], mixtures: dict[str, str], total: int, block_size: int,
                 out_dir: Path, work_dir: Path, tasks: int, executor: Executor, slurm: SlurmSettings,
                 job_name: str, label: str = "chunks", progress_out: TextIO | None = None) -> None:
    """Write the mixture's chunks into `out_dir` as tasks, each a contiguous range of whole chunks, and merge
    their indexes into one index.json; the tasks' logs go to `out_dir/logs/chunks/`, the tokens written show as
    progress (`label`) on `progress_out` (default: stdout)."""
    chunks = -(-total // (block_size * CHUNK_BLOCKS))
    ranges = [(int(r[0]), int(r[-1]) + 1) for r in np.array_split(np.arange(chunks), min(tasks, chunks)) if len(r)]
    index = MixtureIndex(index_dir)
    plan = {"ranges": ranges, "total": total, "block_size": block_size, "entries": index.entries,
            "index": {c: file_sha256(index_dir / f"{c}.npy") for c in INDEX_COLUMNS}}
    clear_unless_planned_as(work_dir / "layout.json", plan, work_dir, lambda: shutil.rmtree(work_dir))
    logs = work_dir / "logs"
    step = WriteChunks(str(index_dir.resolve()), stores, mixtures, str(work_dir.resolve()), ranges, total, block_size,
                       str(logs.resolve()))
    run_pipeline(executor, [step], len(ranges), logs, slurm, job_name, "chunk writing",
                 Watch(label, total, "tokens", out=progress_out))
    merged: dict = {"chunks": [], "config": None, "updated_at": "0"}
    for rank in range(len(ranges)):
        task_dir = work_dir / f"{rank:05d}"
        task_index = json.loads((task_dir / "0.index.json").read_text())
        merged["config"] = merged["config"] or task_index["config"]
        merged["chunks"] += task_index["chunks"]
        for chunk in task_index["chunks"]:  # linked, not moved: a rerun after a kill here finds every task's chunks
            os.link(task_dir / chunk["filename"], out_dir / chunk["filename"])
    (out_dir / "index.json").write_text(json.dumps(merged, sort_keys=True))
    (out_dir / "logs").mkdir(exist_ok=True)
    shutil.move(work_dir / "logs", out_dir / "logs" / "chunks")
    shutil.rmtree(work_dir)
