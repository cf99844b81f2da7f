"""What a training stage's model actually saw of its mixture: `RUN/STAGE/exposure.json` and, where it is known
exactly, `RUN/STAGE/documents_seen.parquet` (document id, source, times seen, tokens seen).

The mixture holds N = tokens // block_size samples (`block_size = seq_len + 1`). The samples litgpt consumed, c
over all ranks, come from its CSV metrics (`total_tokens // seq_len` of the latest row over a resumed run's
versions; the world size W and micro-batch mb from the same row).
- Streamed (`mixing.delivery: stream`, `MixtureData`): training read samples 0, 1, ... in index order, in passes
  of P = N // (W * mb) * W * mb samples, so it read samples [0, P) c // P times and [0, c % P) once more: the
  tokens and documents of every piece of the index in those ranges are exact, mid-pass included.
- Chunks (`LitData`): litgpt reads the chunks in LitData's shuffled order, which is not recorded. Whole passes
  (c a multiple of N) are exact; within a partial pass each source's tokens are its written tokens x c / N, an
  estimate (the chunks are one seeded shuffle of the whole mixture, so every source is spread evenly over them),
  and no documents_seen.parquet is written.
A replayed entry's blocks are followed into the replayed mixture's index, so its documents are listed too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from loguru import logger

from alignmix.outputs import METRICS_FILE, Mixture, MixtureIndex, ModelOutput, TokenStore

DOCUMENTS_SEEN = "documents_seen.parquet"


@dataclass(frozen=True)
class Consumed:
    """What litgpt's training loop consumed: samples over all ranks, the world size and the micro-batch."""

    samples: int
    world: int
    micro_batch: int


def consumed(stage_dir: Path, seq_len: int) -> Consumed | None:
    """The latest row of litgpt's CSV metrics over a resumed run's versions (None when it logged none)."""
    latest: dict[str, str] | None = None
    for metrics in sorted(stage_dir.glob(f"logs/csv/version_*/{METRICS_FILE}")):
        with metrics.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("samples") and (latest is None or float(row["samples"]) >= float(latest["samples"])):
                    latest = row
    if latest is None:
        return None
    per_rank = int(float(latest["samples"]))
    total = int(float(latest["total_tokens"])) // seq_len if latest.get("total_tokens") else per_rank
    iters = int(float(latest["iter"])) if latest.get("iter") else 0
    return Consumed(total, max(total // per_rank, 1) if per_rank else 1, per_rank // iters if iters else 1)


Ranges = list[tuple[int, int, int]]  # token ranges [low, high) of a mixture's stream, each read `times` times


def read_pieces(mixture_dir: Path, ranges: Ranges) -> pl.DataFrame:
    """One row per index piece and range that overlap: `entry`, `shard`, `document`, `times`, and the piece's
    tokens read, [`first`, `last`) from its start."""
    index = MixtureIndex.of(mixture_dir)
    take = np.asarray(index.column("take"), dtype=np.int64)
    ends = np.cumsum(take)
    starts = ends - take
    parts = []
    for low, high, times in ranges:
        if high <= low or times <= 0:
            continue
        a, b = int(np.searchsorted(ends, low, side="right")), int(np.searchsorted(starts, high, side="left"))
        rows = np.arange(a, b)
        parts.append(pl.DataFrame({
            "piece": rows, "times": np.full(len(rows), times, np.int64),
            "first": np.maximum(starts[a:b], low) - starts[a:b], "last": np.minimum(ends[a:b], high) - starts[a:b]}))
    schema = {"piece": pl.Int64, "times": pl.Int64, "first": pl.Int64, "last": pl.Int64}
    pieces = pl.concat(parts).filter(pl.col("last") > pl.col("first")) if parts else pl.DataFrame(schema=schema)
    rows = pieces["piece"].to_numpy()
    return pieces.with_columns(**{name: np.asarray(index.column(name))[rows]
                                  for name in ("entry", "shard", "document")})


def documents_seen(mixture_dir: Path, ranges: Ranges) -> pl.DataFrame:
    """Per document read in `ranges` of the mixture's stream (a replayed block's, in the replayed mixture):
    `source`, `shard`, `document`, `times` (pieces of it read) and `tokens`."""
    pieces = read_pieces(mixture_dir, ranges)
    reads = Mixture(mixture_dir).manifest()["reads"]
    frames = []
    for number, origin in enumerate(MixtureIndex.of(mixture_dir).entries):
        mine = pieces.filter(pl.col("entry") == number)
        if mine.is_empty():
            continue
        if "source" in origin:
            frames.append(mine.select(pl.lit(origin["source"]).alias("source"), "shard", "document", "times",
                                      ((pl.col("last") - pl.col("first")) * pl.col("times")).alias("tokens")))
            continue
        block_start = mine["document"].to_numpy().astype(np.int64) * origin["block_size"]
        nested = [(int(s + f), int(s + la), int(n)) for s, f, la, n in
                  zip(block_start, mine["first"].to_numpy(), mine["last"].to_numpy(), mine["times"].to_numpy())]
        frames.append(documents_seen((mixture_dir / reads["mixtures"][origin["replay"]]).resolve(), nested))
    schema = {"source": pl.String, "shard": pl.UInt32, "document": pl.UInt32, "times": pl.Int64, "tokens": pl.Int64}
    found = pl.concat([f.cast(schema) for f in frames]) if frames else pl.DataFrame(schema=schema)
    return found.group_by("source", "shard", "document").agg(pl.sum("times"), pl.sum("tokens"))


def with_ids(seen: pl.DataFrame, mixture_dir: Path) -> pl.DataFrame:
    """`seen` with each document's id from its token store, as documents_seen.parquet holds it: `id`, `source`,
    `shard`, `document`, `times_seen`, `tokens_seen`."""
    reads = Mixture(mixture_dir).manifest()["reads"]["token_stores"]
    frames = [seen.filter(pl.col("source") == source).join(
                  TokenStore((mixture_dir / reads[source]).resolve()).table().select("id", "shard", "document").collect(),
                  on=["shard", "document"], how="left")
              for source in seen["source"].unique().sort()]
    found = pl.concat(frames) if frames else seen.with_columns(id=pl.lit(None, pl.String))
    return found.select("id", "source", "shard", "document", pl.col("times").alias("times_seen"),
                        pl.col("tokens").alias("tokens_seen")).sort("source", "shard", "document")


def read_ranges(manifest: dict[str, Any], seen: Consumed) -> Ranges | None:
    """The token ranges of the mixture's stream that training read, with their repeats; None where the order
    is not known (chunks, within a partial pass)."""
    block, written = manifest["block_size"], manifest["tokens"] // manifest["block_size"]
    if manifest.get("delivery") == "stream":
        per_pass = written // (seen.world * seen.micro_batch) * seen.world * seen.micro_batch
        passes, rest = divmod(seen.samples, per_pass) if per_pass else (0, 0)
        return [(0, per_pass * block, passes), (0, rest * block, 1)]
    if written and seen.samples % written == 0:
        return [(0, written * block, seen.samples // written)]
    return None


def seen_per_entry(mixture_dir: Path, ranges: Ranges) -> dict[str, dict[str, int]]:
    """Per entry name: the `tokens` read, the `documents` (places; a replayed entry's blocks) read and the most
    `times` one of them was read."""
    names = pl.DataFrame({"name": [origin["name"] for origin in MixtureIndex.of(mixture_dir).entries]}
                         ).with_row_index("entry")
    pieces = read_pieces(mixture_dir, ranges).with_columns(
        pl.col("entry").cast(pl.UInt32), tokens=(pl.col("last") - pl.col("first")) * pl.col("times")
    ).join(names, on="entry", how="left")
    by_document = pieces.group_by("name", "shard", "document").agg(pl.sum("times"), pl.sum("tokens"))
    totals = by_document.group_by("name").agg(pl.sum("tokens"), pl.len().alias("documents"), pl.max("times"))
    return {row.pop("name"): row for row in totals.iter_rows(named=True)}


def exposure(mixture_dir: Path, seen: Consumed) -> tuple[dict[str, Any], pl.DataFrame | None]:
    """The exposure record of a stage and, where exact, its documents seen (see the module docstring)."""
    manifest = Mixture(mixture_dir).manifest()
    block = manifest["block_size"]
    written = manifest["tokens"] // block
    passes = seen.samples / written if written else 0.0
    mismatch = seen.samples - written
    warning = None
    if abs(mismatch) > seen.micro_batch * seen.world:
        what = "read again (a second pass over the first ones)" if mismatch > 0 else "never read"
        warning = (f"litgpt consumed {seen.samples:,} samples of {block:,} tokens but the mixture wrote {written:,}:"
                   f" {abs(mismatch):,} samples {what}, more than one micro-batch over all ranks"
                   f" ({seen.micro_batch * seen.world})")
    ranges = read_ranges(manifest, seen)
    exact = ranges is not None
    per_entry = seen_per_entry(mixture_dir, ranges) if exact else {}
    documents = with_ids(documents_seen(mixture_dir, ranges), mixture_dir) if exact else None
    sources = manifest["sources"]
    if manifest.get("continued"):  # the earlier plan's entries the changed one dropped were read too
        sources = sources + [s for s in manifest["continued"]["earlier"]["sources"]
                             if s["name"] not in {n["name"] for n in sources}]
    record = {
        "stage": manifest["stage"],
        "delivery": manifest.get("delivery", "chunks"),
        "block_size": block,
        "samples_written": written,
        "samples_seen": seen.samples,
        "passes": round(passes, 6),
        "tokens_written": written * block,
        "tokens_seen": seen.samples * block,
        "exact": exact,
        "warning": warning,
        "method": ("exact: the samples litgpt consumed (its metrics) read in index order from the mixture index"
                   if manifest.get("delivery") == "stream" else
                   "exact: whole passes over the chunks, counted from the mixture index" if exact else
                   "estimate: per source, written tokens x passes; LitData read the chunks in a shuffled order that"
                   " is not recorded, so within a partial pass which samples were read is unknown"),
        "sources": [
            {
                "name": source["name"],
                "selection": source.get("selection"),
                "planned_tokens": source["tokens"],
                "written_tokens": source["realised_tokens"],
                "seen_tokens": per_entry.get(source["name"], {}).get("tokens", 0) if exact
                else round(source["realised_tokens"] * passes),
                "documents_used": source["documents_used"],
                "documents_seen": per_entry.get(source["name"], {}).get("documents", 0) if exact else None,
                "max_document_repetitions_seen": per_entry.get(source["name"], {}).get("times", 0) if exact
                else round(source["max_document_repetitions"] * passes, 3),
            }
            for source in sources
        ],
    }
    return record, documents


def write_exposure(stage_dir: Path, mixture_dir: Path, seq_len: int) -> dict[str, Any] | None:
    """Write `stage_dir/exposure.json` (logging its warning, if any), and documents_seen.parquet where exact;
    returns the record; None without litgpt metrics."""
    seen = consumed(stage_dir, seq_len)
    if seen is None:
        return None
    record, documents = exposure(mixture_dir, seen)
    if documents is not None:
        documents.write_parquet(stage_dir / DOCUMENTS_SEEN)
    ModelOutput(stage_dir).exposure_path.write_text(json.dumps(record, indent=2))
    if record["warning"]:
        logger.warning(f"stage '{record['stage']}': {record['warning']}")
    return record
