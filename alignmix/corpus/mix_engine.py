"""A mixture's tokenizing and chunk writing as datatrove tasks on an executor (`mixing: {executor: local|ray|slurm}`).

Tokenizing: task i tokenizes the i-th contiguous group of a source's shards and writes its part to disk: the
tokens (`NNNNN.tokens.npy`, end-of-text after each document), the offsets (`NNNNN.offsets.npy`) and the
documents' ids, metadata and contamination flags (`NNNNN.docs.json`), each renamed into place when complete.
The driver memory-maps the parts in task order, so the documents and the draw are the in-process mixer's.

Chunk writing: the driver plans the draw from the documents' ids and lengths only and saves it (`pieces.npz`:
entry, unit, tokens taken, in stream order). Task j writes the j-th contiguous range of whole chunks with
LitData's own writer, reading its tokens from the memory-mapped parts (or a replayed mixture), and the driver
merges the tasks' indexes into one index.json. The chunks and the index are byte-identical to the in-process
mixer's, whatever the executor or the task count, and no process holds a source's tokens in memory.

Work lives in the stage's output folder (`.tokenized/<source>/`, `.chunks/`): a killed task reruns alone
(datatrove's completion markers), and a changed stage key, which clears that folder, starts afresh. Each work
folder records the task layout it was planned with (`layout.json`: the shard groups, or the chunk ranges); a
rerun with another layout (`mixing.tasks` changed, which the key leaves out) clears the folder instead of taking
the earlier layout's parts for its own. The tasks' datatrove logs stay, in `logs/tokenize/<source>/` and
`logs/chunks/` of the written mixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from alignmix.corpus.engines import SlurmSettings, clear_unless_planned_as, run_pipeline
from alignmix.corpus.mix import (
    CHUNK_BLOCKS,
    ITEM_BLOCKS,
    TOKEN_DTYPE,
    TokenizedDocs,
    replay_candidates,
    tokenize_files,
)
from alignmix.recipe import Executor
from alignmix.scenarios.decontaminate import NgramGuard

WORK_DIR = ".tokenized"
CHUNKS_DIR = ".chunks"


def _planned_as(folder: Path, layout: dict) -> None:
    """Clear the work folder `folder` unless its finished tasks were planned with this `layout`."""
    clear_unless_planned_as(folder / "layout.json", layout, folder, lambda: shutil.rmtree(folder))


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


class WriteChunks(PipelineStep):
    """Write this task's range of the mixture's chunks, assembling their tokens from the drawn pieces
    (`pieces.npz`: entry, unit and tokens taken, in stream order) and the units' origins (`entries.json`)."""

    name = "write chunks"
    type = "💾 - WRITER"

    def __init__(self, plan_dir: str, ranges: list[tuple[int, int]], total: int, block_size: int):
        super().__init__()
        self.plan_dir, self.ranges, self.total, self.block_size = plan_dir, ranges, total, block_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import torch
        from litdata.streaming.item_loader import TokensLoader
        from litdata.streaming.writer import BinaryWriter

        plan_dir = Path(self.plan_dir)
        pieces = np.load(plan_dir / "pieces.npz")
        entries, units, takes = pieces["entry"], pieces["unit"], pieces["take"]
        ends = np.cumsum(takes)
        fetchers = [_fetcher(plan_dir, i, origin) for i, origin in enumerate(json.loads((plan_dir / "entries.json").read_text()))]

        def tokens(low: int, high: int) -> np.ndarray:
            out = np.empty(high - low, dtype=TOKEN_DTYPE)
            piece = int(np.searchsorted(ends, low, side="right"))
            while piece < len(ends) and ends[piece] - takes[piece] < high:
                start = int(ends[piece] - takes[piece])
                a, b = max(low, start), min(high, int(ends[piece]))
                out[a - low : b - low] = fetchers[entries[piece]](int(units[piece]))[a - start : b - start]
                piece += 1
            return out

        first, end = self.ranges[rank]
        task_dir = plan_dir / f"{rank:05d}"
        shutil.rmtree(task_dir, ignore_errors=True)
        item, chunk = self.block_size * ITEM_BLOCKS, self.block_size * CHUNK_BLOCKS
        writer = BinaryWriter(str(task_dir), chunk_size=chunk, chunk_index=first,
                              item_loader=TokensLoader(block_size=self.block_size))
        with _litdata_rank_zero():  # litdata names chunks chunk-RANK-INDEX: these are the one writer's, rank 0
            for index, low in enumerate(range(first * chunk, min(end * chunk, self.total), item)):
                writer.add_item(first * (CHUNK_BLOCKS // ITEM_BLOCKS) + index,
                                torch.from_numpy(tokens(low, min(low + item, self.total))))
            writer.done()
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


def _fetcher(plan_dir: Path, index: int, origin: dict):
    """unit -> its tokens, for entry `index` of a chunk-writing plan."""
    if "replay" in origin:  # a replayed mixture's units are its blocks, in order
        return replay_candidates(Path(origin["replay"]), "", origin["block_size"]).fetch
    stems = sorted(p.with_suffix("").with_suffix("") for p in Path(origin["parts"]).glob("*.tokens.npy"))
    docs = TokenizedDocs(ids=[], metadata=[], contaminated=[], parts=[_part_tokens(stem) for stem in stems])
    chosen = np.load(plan_dir / f"entry-{index}.units.npy")
    return lambda unit: docs.tokens(int(chosen[unit]))


def _part_tokens(stem: Path) -> tuple[np.ndarray, np.ndarray]:
    """A task's part's flat tokens (memory-mapped) and offsets."""
    return np.load(stem.with_suffix(".tokens.npy"), mmap_mode="r"), np.load(stem.with_suffix(".offsets.npy"))


def read_part(stem: Path) -> TokenizedDocs:
    """A task's part, its tokens memory-mapped."""
    record = json.loads(stem.with_suffix(".docs.json").read_text())
    return TokenizedDocs(record["ids"], record["metadata"], record["contaminated"], [_part_tokens(stem)])


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
        shard_groups = [[str(f.resolve()) for f in g] for g in groups]
        _planned_as(parts_dir, {"groups": shard_groups})
        step = TokenizeShards(shard_groups, str(tokenizer_dir.resolve()), guard, str(parts_dir.resolve()))
        run_pipeline(self.executor, [step], len(groups), parts_dir / "logs", self.slurm,
                     f"alignmix-mix-{source}", "tokenizing")
        return [read_part(parts_dir / f"{rank:05d}") for rank in range(len(groups))]

    def write_chunks(self, pieces: list[tuple[str, int, int]], origins: dict[str, tuple[dict, list[int]]],
                     total: int, block_size: int, out_dir: Path, tasks: int, job_name: str) -> None:
        """Write the mixture's chunks into `out_dir` as tasks, each a contiguous range of whole chunks, and merge
        their indexes into one: the chunks and index.json equal `mix._write_chunks`'s for the same stream.
        `origins` names, per entry, where its units come from (a tokenized source or a replayed mixture) and
        each unit's place there."""
        plan_dir = self.work_dir / CHUNKS_DIR
        chunks = -(-total // (block_size * CHUNK_BLOCKS))
        ranges = [(int(r[0]), int(r[-1]) + 1) for r in np.array_split(np.arange(chunks), min(tasks, chunks)) if len(r)]
        _planned_as(plan_dir, {"ranges": ranges, "total": total, "block_size": block_size})
        names = list(origins)
        codes = {name: i for i, name in enumerate(names)}
        _save_atomically(plan_dir / "pieces.npz", lambda h: np.savez(
            h, entry=np.asarray([codes[n] for n, _, _ in pieces], dtype=np.int32),
            unit=np.asarray([u for _, u, _ in pieces], dtype=np.int64),
            take=np.asarray([t for _, _, t in pieces], dtype=np.int64)))
        entries = []
        for i, name in enumerate(names):
            origin, units = origins[name]
            if "source" in origin:
                origin = {"parts": str((self.work_dir / WORK_DIR / origin["source"]).resolve())}
                _save_atomically(plan_dir / f"entry-{i}.units.npy", lambda h: np.save(h, np.asarray(units, np.int64)))
            entries.append(origin)
        _save_atomically(plan_dir / "entries.json", lambda h: h.write(json.dumps(entries).encode()))
        step = WriteChunks(str(plan_dir.resolve()), ranges, total, block_size)
        run_pipeline(self.executor, [step], len(ranges), plan_dir / "logs", self.slurm, job_name, "chunk writing")
        merged: dict = {"chunks": [], "config": None, "updated_at": "0"}
        for rank in range(len(ranges)):
            task_dir = plan_dir / f"{rank:05d}"
            index = json.loads((task_dir / "0.index.json").read_text())
            merged["config"] = merged["config"] or index["config"]
            merged["chunks"] += index["chunks"]
            for chunk in index["chunks"]:  # linked, not moved: a rerun after a kill here finds every task's chunks
                os.link(task_dir / chunk["filename"], out_dir / chunk["filename"])
        (out_dir / "index.json").write_text(json.dumps(merged, sort_keys=True))

    def keep_logs(self, logs_dir: Path) -> None:
        """Move the tasks' datatrove logs (stats, completions, a Slurm launch script) to
        `logs_dir/tokenize/<source>/` and `logs_dir/chunks/` before the parts are removed."""
        moves = [(d, logs_dir / "tokenize" / d.parent.name) for d in sorted((self.work_dir / WORK_DIR).glob("*/logs"))]
        moves += [(d, logs_dir / "chunks") for d in (self.work_dir / CHUNKS_DIR).glob("logs")]
        for source_logs, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source_logs, target)
