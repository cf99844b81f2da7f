"""Building a stage's mixture from its sources' token stores: select in columns, draw an index, write chunks.

Each entry's selection is one polars expression over its source's document tables (`selection_counts`), giving
numpy arrays of the documents it keeps; contaminated documents are left out. Filter-with-replacement,
upsampling and downsampling are one mechanism: an entry draws from its selection in seeded shuffled passes until
its planned tokens are met exactly (only the last document drawn is cut to fit), so a selection smaller than its
budget is repeated (the repetitions recorded) and a larger one is sampled. The entries' pieces are shuffled
together into the stage's mixture index (`alignmix.outputs.MixtureIndex`); a stage with a share schedule is drawn
and shuffled window by window, as `corpus.schedule` plans it. From the index chunk-writing tasks write the LitData
chunks (`mix_engine`), unless training streams the index (`mixing.delivery: stream`). No Python object per
document is made here: the draw is numpy throughout.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import polars as pl

from alignmix.corpus.continued import continued_manifest, prepend_kept, remaining, rest_seed
from alignmix.corpus.engines import SlurmSettings
from alignmix.corpus.plan import PlanError, StagePlan, entry_name, plan_stage
from alignmix.corpus.select import named_fields, normalised
from alignmix.corpus.selection_counts import Fields, selection_expression
from alignmix.corpus.tokens import build_token_store
from alignmix.hashing import derive_seed, file_sha256
from alignmix.outputs import (
    INDEX_COLUMNS,
    Continuation,
    DiskFullError,
    Mixture,
    MixtureIndex,
    MixtureManifest,
    TokenStore,
)
from alignmix.recipe import Delivery, Executor, MixtureEntry, Selector, TrainingStage
from alignmix.scenarios.decontaminate import NgramGuard


@dataclass
class Selection:
    """What an entry can draw from, as arrays: each unit's place (shard, document) and its tokens. A replayed
    mixture's units are its blocks (shard 0, document = block number)."""

    shard: np.ndarray  # uint32
    document: np.ndarray  # uint32
    lengths: np.ndarray  # uint32
    id_hash: np.ndarray | None  # uint64, for the ids digest (None for replayed blocks)
    removed_by_decontamination: int = 0


def select_documents(store: TokenStore, selector: Selector, key: str = "select") -> Selection:
    """The documents of a store that `selector` keeps, less those sharing an n-gram with a held-out item, read
    shard by shard into arrays sized for the whole store (only the pages filled are ever touched). A metadata
    field the selector names that no document has is refused, naming `key` and the fields that exist."""
    fields = Fields.of_table(store.table().collect_schema())
    absent = [(k, path) for k, path in named_fields(selector).items()
              if not any(p == path or p.startswith(path + ".") for p in fields.dtypes)]
    if absent:
        existing = sorted({p.split(".")[0] for p in fields.dtypes} | set(fields.dtypes))
        raise PlanError(f"key '{key}.{absent[0][0]}': no document of this source has metadata field"
                        f" '{absent[0][1]}'; fields that exist: {', '.join(existing) or '(none)'}")
    documents = int(store.summary["documents"])
    columns = {"shard": np.empty(documents, np.uint32), "document": np.empty(documents, np.uint32),
               "tokens": np.empty(documents, np.uint32), "id_hash": np.empty(documents, np.uint64)}
    kept = removed = 0
    for shard in range(store.shards):
        scan = pl.scan_parquet(store.table_path(shard))
        chosen = (scan.with_row_index("document")  # each shard's own columns: one it lacks reads as absent
                  .filter(selection_expression(selector, Fields.of_table(scan.collect_schema())))
                  .select("document", "tokens", "id_hash", "contaminated").collect())
        clean = chosen.filter(~pl.col("contaminated"))
        removed += len(chosen) - len(clean)
        n = len(clean)
        columns["shard"][kept : kept + n] = shard
        for name in ("document", "tokens", "id_hash"):
            columns[name][kept : kept + n] = clean[name].to_numpy()
        kept += n
    for array in columns.values():
        array.resize(kept, refcheck=False)
    return Selection(columns["shard"], columns["document"], columns["tokens"], columns["id_hash"], removed)


def replay_selection(mixture_dir: Path) -> Selection:
    """The blocks of an earlier stage's mixture, as its index and manifest describe them (its chunks unread)."""
    manifest = Mixture(mixture_dir).manifest()
    blocks = manifest["tokens"] // manifest["block_size"]
    return Selection(np.zeros(blocks, np.uint32), np.arange(blocks, dtype=np.uint32),
                     np.full(blocks, manifest["block_size"], np.uint32), None)


def _partial_pass(lengths: np.ndarray, tokens: int, rng: np.random.Generator) -> np.ndarray:
    """The start of a shuffled pass over the units, up to the one that reaches `tokens`: a random sample in
    random order, drawn without shuffling every unit where the pass covers little of the pool."""
    units = len(lengths)
    wanted = min(units, int(1.25 * tokens * units / int(lengths.sum(dtype=np.int64))) + 64)
    if wanted < units // 2:
        sample = rng.choice(units, size=wanted, replace=False, shuffle=True)
        ends = np.cumsum(lengths[sample], dtype=np.int64)
        if ends[-1] >= tokens:
            return sample[: int(np.searchsorted(ends, tokens)) + 1].astype(np.uint32)
    order = np.arange(units, dtype=np.uint32)
    rng.shuffle(order)
    ends = np.cumsum(lengths[order], dtype=np.int64)
    return order[: int(np.searchsorted(ends, tokens)) + 1]


def draw(lengths: np.ndarray, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(units, tokens taken, uses per unit) drawn in shuffled passes over the units until exactly `budget`
    tokens; only the last piece is cut short. The pieces are shuffled together afterwards (`draw_index`), so a
    whole pass is every unit once, in order; only the last, partial pass needs a random order."""
    total = int(lengths.sum(dtype=np.int64))
    uses = np.zeros(len(lengths), np.uint32)
    if budget <= 0 or total <= 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32), uses
    full, rest = divmod(budget, total)
    passes = [np.arange(len(lengths), dtype=np.uint32)] * full
    uses += full
    if rest:
        passes.append(_partial_pass(lengths, rest, rng))
        uses[passes[-1]] += 1
    units = passes[0] if len(passes) == 1 else np.concatenate(passes)
    del passes
    takes = lengths[units]
    if rest:
        takes[-1] = rest - (int(takes[:-1].sum(dtype=np.int64)) - full * total)
    return units, takes, uses


def draw_windows(lengths: np.ndarray, budgets: list[int], rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(units, tokens taken, uses per unit, pieces per window) for a scheduled entry: one stream of shuffled
    passes over the units, each window taking the next units until its budget exactly (its last piece cut short;
    pieces are document prefixes, so a cut document is not continued in the next window)."""
    units, takes, counts = [], [], []
    uses = np.zeros(len(lengths), np.uint32)
    order, ends, at = np.zeros(0, np.uint32), np.zeros(0, np.int64), 0
    for budget in budgets:
        pieces = 0
        while budget > 0:
            if at == len(order):  # a new pass
                order = np.arange(len(lengths), dtype=np.uint32)
                rng.shuffle(order)
                ends, at = np.cumsum(lengths[order], dtype=np.int64), 0
            done = int(ends[at - 1]) if at else 0
            stop = min(int(np.searchsorted(ends, done + budget)) + 1, len(order))
            taken = order[at:stop]
            part = lengths[taken].copy()
            budget -= int(ends[stop - 1]) - done
            if budget < 0:
                part[-1] = int(part[-1]) + budget
                budget = 0
            uses[taken] += 1
            units.append(taken)
            takes.append(part)
            pieces += len(taken)
            at = stop
        counts.append(pieces)
    if not units:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32), uses, counts
    return np.concatenate(units), np.concatenate(takes), uses, counts


def stream_order(counts: list[list[int]], rng: np.random.Generator) -> np.ndarray:
    """The stream's rows as positions in draw order (entry by entry, each entry's pieces window by window, as
    `counts[entry][window]`): window by window, each window's pieces of every entry shuffled together."""
    pieces = sum(map(sum, counts))
    dtype = np.uint32 if pieces < 2**32 else np.uint64
    if all(len(c) == 1 for c in counts):  # no windows: every piece shuffled, with no copy beside the order
        order = np.arange(pieces, dtype=dtype)
        rng.shuffle(order)
        return order
    starts = np.cumsum([0] + [sum(c) for c in counts[:-1]])
    order = np.empty(pieces, dtype=dtype)
    at = 0
    for window in range(len(counts[0]) if counts else 0):
        first = at
        for start, c in zip(starts, counts):
            low = start + sum(c[:window])
            order[at : at + c[window]] = np.arange(low, low + c[window], dtype=order.dtype)
            at += c[window]
        rng.shuffle(order[first:at])
    return order


DIGEST_BLOCK = 1 << 20  # units per step of the digest's in-place compaction


def _ids_digest(id_hash: np.ndarray, uses: np.ndarray) -> str:
    """sha256 over the used documents' id hashes, each mixed with its number of uses, sorted: the same
    documents drawn as often give the same digest whatever their places. Consumes `id_hash`: the keys are
    compacted and sorted in its own memory, a block at a time (writes never overtake reads)."""
    kept = 0
    for start in range(0, len(uses), DIGEST_BLOCK):
        block_uses = uses[start : start + DIGEST_BLOCK]
        used = block_uses > 0
        keys = id_hash[start : start + DIGEST_BLOCK][used]
        keys ^= block_uses[used].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        id_hash[kept : kept + len(keys)] = keys
        kept += len(keys)
    compacted = id_hash[:kept]
    compacted.sort()
    return hashlib.sha256(compacted.data).hexdigest()


@dataclass
class MixtureStats:
    realised_tokens: int
    documents_used: int
    max_document_repetitions: int
    document_ids_sha256: str


def draw_index(stage: TrainingStage, selections: dict[str, Selection], origins: list[dict], plan: StagePlan,
               seed: int, index: MixtureIndex) -> dict[str, MixtureStats]:
    """Draw every entry's pieces and write them, shuffled together (a scheduled stage's window by window), as
    the stage's mixture index; returns each entry's figures, counted by document place (two documents sharing an
    id are two documents)."""
    drawn: list[tuple[np.ndarray, np.ndarray]] = []
    counts: list[list[int]] = []
    stats: dict[str, MixtureStats] = {}
    for number, source_plan in enumerate(plan.sources):
        selection = selections[source_plan.name]
        rng = np.random.default_rng(derive_seed(seed, stage.name, source_plan.name))
        if plan.windows:
            units, takes, uses, pieces = draw_windows(selection.lengths, [w.tokens[number] or 0 for w in plan.windows],
                                                      rng)
        else:
            units, takes, uses = draw(selection.lengths, source_plan.tokens or 0, rng)
            pieces = [len(units)]
        counts.append(pieces)
        stats[source_plan.name] = MixtureStats(
            realised_tokens=int(takes.sum(dtype=np.int64)), documents_used=int(np.count_nonzero(uses)),
            max_document_repetitions=int(uses.max(initial=0)),
            document_ids_sha256=_ids_digest(selection.id_hash if selection.id_hash is not None
                                            else np.arange(len(uses), dtype=np.uint64), uses))
        del uses
        selection.id_hash = None  # consumed by the digest
        drawn.append((units, takes))
    names = [o["name"] for o in origins]
    pieces = sum(len(units) for units, _ in drawn)
    order = stream_order(counts, np.random.default_rng(derive_seed(seed, stage.name, "shuffle")))
    index.allocate(pieces)
    for name, dtype in INDEX_COLUMNS.items():
        whole = np.empty(pieces, dtype=dtype)  # in draw order, then written shuffled into the preallocated file
        at = 0
        for source_plan, (units, takes) in zip(plan.sources, drawn):
            whole[at : at + len(units)] = _piece_column(name, names.index(source_plan.name),
                                                        selections[source_plan.name], units, takes)
            at += len(units)
        column = index.writable(name)
        np.take(whole, order, out=column)
        column.flush()
        del whole, column
    index.write_entries(origins)
    return stats


def _piece_column(name: str, entry: int, selection: Selection, units: np.ndarray, takes: np.ndarray
                  ) -> np.ndarray | int:
    """An entry's drawn pieces' values of index column `name`."""
    if name == "entry":
        return entry
    if name == "take":
        return takes
    return selection.shard[units] if name == "shard" else selection.document[units]


def _origin(entry: MixtureEntry, replay_dirs: dict[str, Path]) -> dict:
    name = entry_name(entry)
    if entry.replay is not None:
        block_size = Mixture(replay_dirs[entry.replay]).manifest()["block_size"]
        return {"name": name, "replay": entry.replay, "block_size": block_size}
    return {"name": name, "source": entry.source or ""}


def mix_stage(stage: TrainingStage, stores: dict[str, Path], out_dir: Path, seed: int,
              replay_dirs: dict[str, Path] | None = None, tasks: int = 1, stage_index: int = 0,
              executor: Executor = "local", slurm: SlurmSettings | None = None, delivery: Delivery = "chunks",
              continued: Continuation | None = None, progress_out: TextIO | None = None) -> dict:
    """Write `out_dir` (mixture_index/, mixture_manifest.json and, with `delivery` chunks, the LitData chunks)
    atomically from the sources' token stores (`stores`: every source the stage or a replayed stage draws from)
    and the replayed stages' mixtures (`replay_dirs`: every stage replayed, directly or through another); returns
    the manifest. `stage_index` (the stage's place in the recipe) names the recipe keys in errors. `continued`
    (a mid-run change, streamed only) keeps the earlier mixture's consumed samples and re-plans the rest. The
    chunks written show as progress (`mix/<stage>`) on `progress_out` (default: stdout)."""
    from alignmix.corpus.mix_engine import write_chunks

    replay_dirs = replay_dirs or {}
    selections: dict[str, Selection] = {}
    for position, entry in enumerate(stage.mixture):
        if entry.replay is not None:
            selections[entry_name(entry)] = replay_selection(replay_dirs[entry.replay])
        else:
            selections[entry_name(entry)] = select_documents(
                TokenStore(stores[entry.source or ""]), entry.select, f"stages.{stage_index}.mixture.{position}.select")
    planned, kept_tokens, draw_seed = stage, 0, seed
    if continued is not None:
        planned, kept_tokens = remaining(stage, continued)
        draw_seed = rest_seed(seed, stage, continued)
    plan = plan_stage(planned, {name: int(s.lengths.sum(dtype=np.int64)) for name, s in selections.items()})
    origins = [_origin(e, replay_dirs) for e in stage.mixture]
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    index = MixtureIndex.of(tmp_dir)
    try:
        stats = draw_index(stage, selections, origins, plan, draw_seed, index)
        if continued is not None:
            prepend_kept(index, continued, kept_tokens)
        if delivery == "chunks":
            write_chunks(index.folder, {k: str(Path(v).resolve()) for k, v in stores.items()},
                         {k: str(Path(v).resolve()) for k, v in replay_dirs.items()}, stage.tokens,
                         stage.block_size, tmp_dir, out_dir / ".chunks", tasks, executor, slurm or SlurmSettings(),
                         f"alignmix-chunks-{stage.name}", f"mix/{stage.name}", progress_out)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"{tmp_dir}: no space left on the disk while writing the mixture") from exc
        raise
    summaries = {name: TokenStore(stores[name]).summary for name in sorted({e.source for e in stage.mixture
                                                                             if e.source is not None})}
    chosen_by = {entry_name(e): None if e.replay is not None else normalised(e.select) for e in stage.mixture}
    guards = [s["decontamination"] for s in summaries.values() if s.get("decontamination")]
    earlier = continued_manifest(continued, kept_tokens) if continued is not None else None
    earlier_reads = earlier.pop("reads") if earlier is not None else {}
    manifest: MixtureManifest = {
        "stage": stage.name,
        "tokens": stage.tokens,
        "seq_len": stage.seq_len,
        "block_size": stage.block_size,
        "seed": seed,
        "delivery": delivery,
        "reads": {kind: {**earlier_reads.get(kind, {}), **{k: os.path.relpath(Path(v).resolve(), out_dir.resolve())
                                                            for k, v in dirs.items()}}
                  for kind, dirs in (("token_stores", stores), ("mixtures", replay_dirs))},
        "decontamination": None if not guards else {
            **guards[0], "documents_removed": sum(s.removed_by_decontamination for s in selections.values()),
        },
        "token_stores": {name: {k: s[k] for k in ("documents", "tokens", "dtype")} for name, s in summaries.items()},
        "sources": [
            {
                **asdict(source_plan),
                "selection": chosen_by[source_plan.name],
                "realised_tokens": stats[source_plan.name].realised_tokens,
                "documents_available": len(selections[source_plan.name].lengths),
                "documents_used": stats[source_plan.name].documents_used,
                "documents_removed_by_decontamination": selections[source_plan.name].removed_by_decontamination,
                "max_document_repetitions": stats[source_plan.name].max_document_repetitions,
                "document_ids_sha256": stats[source_plan.name].document_ids_sha256,
            }
            for source_plan in plan.sources
        ],
        **({"windows": [{"start": w.start, "end": w.end, "tokens": w.tokens} for w in plan.windows]}
           if plan.windows else {}),
        "continued": earlier,
        "chunks": {p.name: file_sha256(p) for p in sorted(tmp_dir.iterdir()) if p.is_file()},
        "mixture_index": {name: file_sha256(index.folder / f"{name}.npy") for name in INDEX_COLUMNS},
    }
    Mixture(tmp_dir).write_manifest(manifest)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    return manifest


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
    delivery: Delivery = "chunks",
    progress_out: TextIO | None = None,
) -> dict:
    """Tokenize the stage's sources into token stores beside `out_dir` (`<out_dir>.tokens/<source>/`, kept and
    reused by a rerun) and mix from them: `alignmix run` runs the two as separate stages, this is both at once
    for a mixture outside a run. Returns the manifest."""
    stores = {}
    for name in sorted({e.source for e in stage.mixture if e.source is not None}):
        store_dir = out_dir.with_name(out_dir.name + ".tokens") / name
        store_dir.mkdir(parents=True, exist_ok=True)
        build_token_store(source_files[name], tokenizer_dir, store_dir, guard, tasks, executor or "local", slurm,
                          f"alignmix-tokens-{name}", progress_out)
        stores[name] = store_dir
    for replayed in (replay_dirs or {}).values():  # a replayed mixture's own sources
        for origin in MixtureIndex.of(replayed).entries:
            if "source" in origin and origin["source"] not in stores:
                stores[origin["source"]] = replayed.with_name(replayed.name + ".tokens") / origin["source"]
    return mix_stage(stage, stores, out_dir, seed, replay_dirs, tasks, stage_index, executor or "local", slurm,
                     delivery, progress_out=progress_out)
