"""Building a stage's mixture: select, sample to the planned tokens, shuffle, tokenize and write LitData chunks.

Filter-with-replacement, upsampling and downsampling are one mechanism: an entry draws documents from its
selection in seeded shuffled passes until its planned tokens are met exactly (the last document drawn is
cut to fit), so a selection smaller than its budget is repeated (with the repetitions recorded) and a
larger one is sampled. The entries' documents are then shuffled together and packed.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from alignmix.checkpoints.tokenizer import load_tokenizer
from alignmix.corpus.engines import SlurmSettings
from alignmix.corpus.plan import PlanError, StagePlan, entry_name, plan_stage
from alignmix.corpus.select import MISSING, compile_selector, field_value, metadata_paths, named_fields, normalised
from alignmix.hashing import derive_seed, file_sha256, strings_sha256
from alignmix.jsonl import read_jsonl_gz
from alignmix.recipe import Executor, Selector, TrainingStage
from alignmix.scenarios.decontaminate import NgramGuard

if TYPE_CHECKING:
    from alignmix.corpus.mix_engine import MixingEngine

TOKEN_DTYPE = np.int32
ITEM_BLOCKS, CHUNK_BLOCKS = 256, 1024  # blocks per LitData item and per chunk file


@dataclass
class Candidates:
    """What an entry can draw from: unit ids, their token counts, and a way to fetch a unit's tokens. `units`
    are the units' places in what they come from: a source's documents, or a replayed mixture's blocks."""

    ids: list[str]
    lengths: list[int]
    fetch: Callable[[int], np.ndarray]
    units: list[int]
    removed_by_decontamination: int = 0


@dataclass
class TokenizedDocs:
    """A source's documents: ids, metadata (tags under `ai_discourse`), contamination flags, and their tokens in
    one flat array per part (a tokenizing task's output, memory-mapped when it was written to disk)."""

    ids: list[str]
    metadata: list[dict]
    contaminated: list[bool]
    parts: list[tuple[np.ndarray, np.ndarray]]  # (flat tokens, offsets): part document j is flat[off[j]:off[j+1]]

    def __post_init__(self) -> None:
        self._first = np.cumsum([0] + [len(offsets) - 1 for _, offsets in self.parts])  # first document of each part
        self.lengths = np.concatenate([np.diff(offsets) for _, offsets in self.parts] or [np.zeros(0, np.int64)])

    def _locate(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        part = int(np.searchsorted(self._first, index, side="right")) - 1
        flat, offsets = self.parts[part]
        return flat, offsets, index - int(self._first[part])

    def tokens(self, index: int) -> np.ndarray:
        flat, offsets, local = self._locate(index)
        return flat[offsets[local] : offsets[local + 1]]


def tokenize_files(files: list[Path], tokenizer_dir: Path, guard: NgramGuard | None,
                    batch_size: int = 1024) -> TokenizedDocs:
    tokenizer, eos = load_tokenizer(tokenizer_dir)
    ids: list[str] = []
    metadata: list[dict] = []
    contaminated: list[bool] = []
    arrays: list[np.ndarray] = []
    batch: list[str] = []

    def flush() -> None:
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            arrays.append(np.asarray([*encoding.ids, eos], dtype=TOKEN_DTYPE))
        batch.clear()

    for row in read_jsonl_gz(files):
        ids.append(str(row["id"]))
        metadata.append(row.get("metadata") or {})
        contaminated.append(guard is not None and guard.contaminated(row["text"]))
        batch.append(row["text"])
        if len(batch) >= batch_size:
            flush()
    flush()
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=TOKEN_DTYPE)
    return TokenizedDocs(ids, metadata, contaminated, [(flat, offsets)])


def file_groups(files: list[Path], tasks: int) -> list[list[Path]]:
    """The files split into at most `tasks` contiguous groups, in order: task i tokenizes group i, so the
    documents keep the files' order whatever the task count."""
    if not files:
        return []
    return [list(g) for g in np.array_split(np.asarray(files, dtype=object), min(tasks, len(files))) if len(g)]


def _joined(parts: list[TokenizedDocs]) -> TokenizedDocs:
    return TokenizedDocs(
        ids=[i for p in parts for i in p.ids],
        metadata=[m for p in parts for m in p.metadata],
        contaminated=[c for p in parts for c in p.contaminated],
        parts=[piece for p in parts for piece in p.parts],
    )


def tokenize_source(files: list[Path], tokenizer_dir: Path, guard: NgramGuard | None = None,
                    tasks: int = 1, engine: MixingEngine | None = None, source: str = "") -> TokenizedDocs:
    """Read a source's documents and tokenize them (each followed by end-of-text): over `tasks` processes here,
    or, with an `engine`, as datatrove tasks on its executor writing their parts to disk."""
    groups = file_groups(files, tasks)
    if engine is not None:
        return _joined(engine.tokenize(source, groups, tokenizer_dir, guard))
    if len(groups) <= 1:
        return tokenize_files(files, tokenizer_dir, guard)
    with multiprocessing.get_context("spawn").Pool(len(groups)) as pool:
        return _joined(pool.starmap(tokenize_files, [(g, tokenizer_dir, guard) for g in groups]))


def document_candidates(docs: TokenizedDocs, selector: Selector, key: str = "select") -> Candidates:
    """The selected documents of a source, less those sharing an n-gram with a held-out item. A metadata field
    the selector names that no document has is refused, naming `key` and the fields that exist."""
    absent = [(k, path) for k, path in named_fields(selector).items()
              if not any(field_value(m, path) is not MISSING for m in docs.metadata)]
    if absent:
        existing = sorted(set().union(*(metadata_paths(m) for m in docs.metadata[:1000])))
        raise PlanError(f"key '{key}.{absent[0][0]}': no document of this source has metadata field"
                        f" '{absent[0][1]}'; fields that exist: {', '.join(existing) or '(none)'}")
    keep = compile_selector(selector)
    chosen = [i for i, metadata in enumerate(docs.metadata) if keep(metadata)]
    clean = [i for i in chosen if not docs.contaminated[i]]
    return Candidates(
        ids=[docs.ids[i] for i in clean],
        lengths=docs.lengths[clean].tolist(),
        fetch=lambda k: docs.tokens(clean[k]),
        units=clean,
        removed_by_decontamination=len(chosen) - len(clean),
    )


def replay_candidates(stage_dir: Path, stage_name: str, block_size: int) -> Candidates:
    """Blocks of an earlier stage's written mixture, read back from its LitData chunks."""
    from litdata.streaming import StreamingDataset
    from litdata.streaming.item_loader import TokensLoader

    dataset = StreamingDataset(str(stage_dir), item_loader=TokensLoader(block_size=block_size))
    return Candidates(
        ids=[f"replay:{stage_name}:{i}" for i in range(len(dataset))],
        lengths=[block_size] * len(dataset),
        fetch=lambda k: dataset[k].numpy().astype(TOKEN_DTYPE),
        units=list(range(len(dataset))),
    )


def draw(lengths: list[int], budget: int, rng: random.Random) -> list[tuple[int, int]]:
    """(index, tokens taken) drawn in shuffled passes until exactly `budget` tokens; only the last is cut short."""
    drawn: list[tuple[int, int]] = []
    total = 0
    while total < budget:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        for index in order:
            take = min(lengths[index], budget - total)
            drawn.append((index, take))
            total += take
            if total == budget:
                break
    return drawn


@contextlib.contextmanager
def _private_litdata_cache(parent: Path) -> Iterator[None]:
    """litdata stages chunks in one machine-wide folder (TMPDIR/chunks) and wipes it when optimize starts, so two
    mixtures written at once would delete each other's chunks: give this call a folder of its own."""
    names = ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER")
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix=".litdata-", dir=parent) as cache:
        os.environ[names[0]], os.environ[names[1]] = f"{cache}/chunks", f"{cache}/data"
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _write_chunks(stream_file: Path, total: int, block_size: int, out_dir: Path) -> None:
    """Write the token stream as LitData chunks readable by `TokensLoader(block_size)`."""
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    piece = block_size * ITEM_BLOCKS
    slices = [(start, min(start + piece, total)) for start in range(0, total, piece)]
    with _private_litdata_cache(out_dir.parent):
        optimize(
            fn=_StreamSlice(str(stream_file), total),
            inputs=slices,
            output_dir=str(out_dir),
            chunk_size=block_size * CHUNK_BLOCKS,
            item_loader=TokensLoader(block_size=block_size),
            num_workers=1,
            verbose=False,
            start_method="fork",
        )
    index_file = out_dir / "index.json"
    index = json.loads(index_file.read_text())
    index["updated_at"] = "0"  # litdata stamps the wall clock here; a fixed value keeps the chunks reproducible
    index_file.write_text(json.dumps(index, sort_keys=True))


class _StreamSlice:
    """Picklable optimize function yielding one slice of the memory-mapped token stream."""

    def __init__(self, path: str, total: int):
        self.path, self.total = path, total

    def __call__(self, bounds: tuple[int, int]):
        import torch

        stream = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r", shape=(self.total,))
        yield torch.from_numpy(np.array(stream[bounds[0] : bounds[1]]))


def _write_in_process(pieces: list[tuple[str, int, int]], candidates: dict[str, Candidates], total: int,
                      block_size: int, out_dir: Path) -> None:
    """Write the drawn pieces, in order, into one memory-mapped token stream beside `out_dir`, then as chunks."""
    stream_file = out_dir.parent / f"{out_dir.name}.tokens.bin"
    stream = np.memmap(stream_file, dtype=TOKEN_DTYPE, mode="w+", shape=(total,))
    position = 0
    for name, index, take in pieces:
        stream[position : position + take] = candidates[name].fetch(index)[:take]
        position += take
    stream.flush()
    del stream
    _write_chunks(stream_file, total, block_size, out_dir)
    stream_file.unlink()


def build_stage_mixture(
    stage: TrainingStage,
    source_files: dict[str, list[Path]],
    tokenizer_dir: Path,
    out_dir: Path,
    seed: int,
    replay_dirs: dict[str, Path] | None = None,
    guard: NgramGuard | None = None,
    tasks: int = 1,
    stage_index: int = 0,
    executor: Executor | None = None,
    slurm: SlurmSettings | None = None,
) -> dict:
    """Write `out_dir` (LitData chunks + mixture_manifest.json) atomically; returns the manifest. `stage_index`
    (the stage's place in the recipe) names the recipe keys in errors. With an `executor`, the sources are
    tokenized and the chunks written as datatrove tasks on it (`mix_engine`); the output is the same."""
    from alignmix.corpus.mix_engine import MixingEngine

    engine = None if executor is None else MixingEngine(executor, out_dir, slurm or SlurmSettings())
    sources = {e.source for e in stage.mixture if e.source is not None}
    tokenized = {name: tokenize_source(source_files[name], tokenizer_dir, guard, tasks, engine, name)
                 for name in sorted(sources)}
    candidates: dict[str, Candidates] = {}
    replay_dirs = replay_dirs or {}
    replay_blocks: dict[str, int] = {}
    for index, entry in enumerate(stage.mixture):
        if entry.replay is not None:
            replayed = replay_dirs[entry.replay]  # read with the geometry it was written with
            replay_blocks[entry.replay] = json.loads((replayed / "mixture_manifest.json").read_text())["block_size"]
            candidates[entry_name(entry)] = replay_candidates(replayed, entry.replay, replay_blocks[entry.replay])
        else:
            candidates[entry_name(entry)] = document_candidates(
                tokenized[entry.source or ""], entry.select, f"stages.{stage_index}.mixture.{index}.select")
    plan: StagePlan = plan_stage(stage, {name: sum(c.lengths) for name, c in candidates.items()})
    selections = {entry_name(e): None if e.replay is not None else normalised(e.select) for e in stage.mixture}

    pieces: list[tuple[str, int, int]] = []  # (entry name, unit index, tokens taken)
    uses: dict[str, Counter[str]] = {}
    for source_plan in plan.sources:
        pool = candidates[source_plan.name]
        drawn = draw(pool.lengths, source_plan.tokens, random.Random(derive_seed(seed, stage.name, source_plan.name)))
        uses[source_plan.name] = Counter(pool.ids[i] for i, _ in drawn)
        pieces.extend((source_plan.name, i, take) for i, take in drawn)
    random.Random(derive_seed(seed, stage.name, "shuffle")).shuffle(pieces)

    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    if engine is None:
        _write_in_process(pieces, candidates, stage.tokens, stage.block_size, tmp_dir)
    else:
        origins = {entry_name(e): {"replay": str(replay_dirs[e.replay]), "block_size": replay_blocks[e.replay]}
                   if e.replay is not None else {"source": e.source or ""} for e in stage.mixture}
        engine.write_chunks(pieces, {name: (origins[name], c.units) for name, c in candidates.items()},
                            stage.tokens, stage.block_size, tmp_dir, tasks, f"alignmix-chunks-{stage.name}")
    realised: Counter[str] = Counter()
    for name, _, take in pieces:
        realised[name] += take

    manifest = {
        "stage": stage.name,
        "tokens": stage.tokens,
        "seq_len": stage.seq_len,
        "block_size": stage.block_size,
        "seed": seed,
        "decontamination": None if guard is None else {
            "ngram": guard.n, "held_out_items": guard.items,
            "documents_removed": sum(c.removed_by_decontamination for c in candidates.values()),
        },
        "sources": [
            {
                **asdict(source_plan),
                "selection": selections[source_plan.name],
                "realised_tokens": realised[source_plan.name],
                "documents_available": len(candidates[source_plan.name].ids),
                "documents_used": len(uses[source_plan.name]),
                "documents_removed_by_decontamination": candidates[source_plan.name].removed_by_decontamination,
                "max_document_repetitions": max(uses[source_plan.name].values(), default=0),
                "document_ids_sha256": strings_sha256(sorted(f"{d}\t{n}" for d, n in uses[source_plan.name].items())),
            }
            for source_plan in plan.sources
        ],
        "chunks": {p.name: file_sha256(p) for p in sorted(tmp_dir.iterdir()) if p.is_file()},
    }
    (tmp_dir / "mixture_manifest.json").write_text(json.dumps(manifest, indent=2))
    if engine is not None:
        engine.keep_logs(tmp_dir / "logs")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    return manifest
