"""Tokenizing a source once, into its token store (`alignmix.outputs.TokenStore`), as datatrove tasks.

Task i tokenizes the i-th contiguous group of the source's tagged shards; each shard becomes store shard k (its
place in the source), so the store is the same whatever the task count or executor. A shard's three files are
renamed into place when complete and a rerun skips the shards that are there, so a killed task, or a rerun with
another task count, redoes only the missing shards. Every mixture (each training stage, each sweep condition)
draws from the store without tokenizing again. Progress: the shards' MB tokenized and the tokens, rate and ETA.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np
import polars as pl
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from alignmix.checkpoints.tokenizer import load_tokenizer
from alignmix.corpus.engines import (
    PROGRESS_FOLDER,
    SlurmSettings,
    TaskCounts,
    Watch,
    clear_unless_planned_as,
    run_pipeline,
)
from alignmix.corpus.selection_counts import Fields
from alignmix.outputs import META_PREFIX, STORE_FILE, TokenStore, token_dtype
from alignmix.recipe import Executor
from alignmix.scenarios.decontaminate import NgramGuard

BATCH = 1024  # documents per encode_batch call


def _read_shard(path: Path) -> pl.DataFrame:
    """A tagged shard (jsonl or jsonl.gz) as a frame, its schema inferred from every row."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if not raw.strip():
        return pl.DataFrame(schema={"id": pl.String, "text": pl.String})
    return pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)


def document_table(frame: pl.DataFrame, lengths: np.ndarray, contaminated: np.ndarray) -> pl.DataFrame:
    """The store's document table for a shard read by `_read_shard`: id, its hash, length in tokens, the
    contamination flag and every metadata field as a flat `metadata.<path>` column."""
    ids = frame["id"].cast(pl.String) if "id" in frame.columns else pl.Series("id", [None] * len(frame), pl.String)
    hashes = np.fromiter((int.from_bytes(hashlib.blake2b((i or "").encode(), digest_size=8).digest(), "little")
                          for i in ids.to_list()), dtype=np.uint64, count=len(ids))
    fields = Fields.of_struct(frame.schema)
    table = frame.select(id=ids, **{META_PREFIX + path: fields.expr(path) for path in fields.dtypes})
    return table.with_columns(id_hash=pl.Series(hashes), tokens=pl.Series(lengths, dtype=pl.UInt32),
                              contaminated=pl.Series(contaminated, dtype=pl.Boolean)).select(
        "id", "id_hash", "tokens", "contaminated", *[c for c in table.columns if c.startswith(META_PREFIX)])


def tokenize_shard(path: Path, tokenizer_dir: Path, guard: NgramGuard | None,
                   on_batch: Callable[[float, int], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """A shard's tokens (end-of-text after each document), offsets and document table; after each batch of
    documents, `on_batch(share of the shard done, tokens so far)`."""
    tokenizer, eos = load_tokenizer(tokenizer_dir)
    dtype = token_dtype(tokenizer.get_vocab_size(with_added_tokens=True))
    frame = _read_shard(path)
    texts = frame["text"].fill_null("").to_list() if len(frame) else []
    arrays = []
    contaminated = np.zeros(len(texts), dtype=bool)
    so_far = 0
    for start in range(0, len(texts), BATCH):
        batch = texts[start : start + BATCH]
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            arrays.append(np.asarray([*encoding.ids, eos], dtype=dtype))
            so_far += len(arrays[-1])
        if guard is not None:
            contaminated[start : start + len(batch)] = [guard.contaminated(t) for t in batch]
        if on_batch is not None:
            on_batch((start + len(batch)) / len(texts), so_far)
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
    return tokens, offsets, document_table(frame, lengths, contaminated)


def _save_atomically(path: Path, write) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        write(handle)
    os.replace(partial, path)


class TokenizeShards(PipelineStep):
    """Tokenize the shards of this task's rank into the store."""

    name = "tokenize"
    type = "🔢 - TOKENIZE"

    def __init__(self, shards: list[str], groups: list[list[int]], tokenizer_dir: str, guard: NgramGuard | None,
                 store_dir: str, progress_dir: str | None = None):
        super().__init__()
        self.shards, self.groups, self.tokenizer_dir, self.guard = shards, groups, tokenizer_dir, guard
        self.store_dir, self.progress_dir = store_dir, progress_dir

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        store = TokenStore(Path(self.store_dir))
        counts = TaskCounts(self.progress_dir, rank)
        done_bytes = done_tokens = 0  # of this task's shards in the store (an earlier run's too)
        for shard in self.groups[rank]:
            size = os.path.getsize(self.shards[shard])
            if store.shard_done(shard):
                done_bytes, done_tokens = done_bytes + size, done_tokens + int(store.offsets(shard)[-1])
                continue
            tokens, offsets, table = tokenize_shard(
                Path(self.shards[shard]), Path(self.tokenizer_dir), self.guard,
                lambda share, so_far: counts.set(bytes=done_bytes + int(share * size), tokens=done_tokens + so_far))
            _save_atomically(store.tokens_path(shard), lambda h: np.save(h, tokens))
            _save_atomically(store.offsets_path(shard), lambda h: np.save(h, offsets))
            _save_atomically(store.table_path(shard), lambda h: table.write_parquet(h))
            self.stat_update("documents", value=len(offsets) - 1)
            self.stat_update("tokens", value=int(len(tokens)))
            done_bytes, done_tokens = done_bytes + size, done_tokens + len(tokens)
        counts.set(bytes=done_bytes, tokens=done_tokens)
        counts.flush()
        yield from ()


def shard_groups(shards: int, tasks: int) -> list[list[int]]:
    """Shard numbers split into at most `tasks` contiguous groups, in order."""
    return [g.tolist() for g in np.array_split(np.arange(shards), min(tasks, shards)) if len(g)] if shards else []


def build_token_store(files: list[Path], tokenizer_dir: Path, store_dir: Path, guard: NgramGuard | None = None,
                      tasks: int = 1, executor: Executor = "local", slurm: SlurmSettings | None = None,
                      job_name: str = "alignmix-tokens", progress_out: TextIO | None = None) -> TokenStore:
    """Tokenize `files` (a source's tagged shards) into `store_dir` as tasks on `executor`; keeps the shards an
    earlier run under the same inputs completed. Task logs go to `store_dir/logs/`; progress (`tokens/<store
    folder name>`: MB of shards, tokens) to `progress_out` (default: stdout)."""
    store = TokenStore(store_dir)
    logs = store_dir / "logs"
    shards = [str(f.resolve()) for f in files]
    inputs = {"shards": shards, "tokenizer": str(tokenizer_dir.resolve()),
              "decontamination": None if guard is None else {"ngram": guard.n, "held_out_items": guard.items}}
    clear_unless_planned_as(logs / "inputs.json", inputs, store_dir / STORE_FILE, lambda: _clear(store_dir))
    groups = shard_groups(len(shards), tasks)
    clear_unless_planned_as(logs / "layout.json", {"groups": groups}, logs / "completions",
                            lambda: _clear_task_records(logs))
    if groups:
        step = TokenizeShards(shards, groups, str(tokenizer_dir.resolve()), guard, str(store_dir.resolve()),
                              str(logs.resolve()))
        watch = Watch(f"tokens/{store_dir.name}", sum(os.path.getsize(s) for s in shards), "bytes", "tokens",
                      progress_out)
        run_pipeline(executor, [step], len(groups), logs, slurm or SlurmSettings(), job_name, "tokenizing", watch)
    documents = tokens = 0
    for shard in range(len(shards)):
        offsets = store.offsets(shard)
        documents, tokens = documents + len(offsets) - 1, tokens + int(offsets[-1])
    tokenizer, _ = load_tokenizer(tokenizer_dir)
    summary = {"shards": len(shards), "dtype": token_dtype(tokenizer.get_vocab_size(with_added_tokens=True)).name,
               "documents": documents, "tokens": tokens, "decontamination": inputs["decontamination"]}
    (store_dir / STORE_FILE).write_text(json.dumps(summary, indent=2))
    return store


def _clear_task_records(logs: Path) -> None:
    """Forget which tasks completed and what they counted: under another layout a rank is other shards."""
    for name in ("completions", PROGRESS_FOLDER):
        shutil.rmtree(logs / name, ignore_errors=True)


def _clear(store_dir: Path) -> None:
    """Remove an earlier store's shards and logs (made from other inputs), keeping the folder."""
    for path in store_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
