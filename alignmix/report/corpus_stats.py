"""Corpus statistics over tagged shards and mixture manifests, computed with polars.

Inputs are folders: run folders, `alignmix tag` outputs, or anything holding jsonl.gz shards whose
documents carry `metadata.ai_discourse`, and `mixture_manifest.json` files. Nothing else of the stages is read.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import polars as pl

from alignmix.errors import AlignmixError
from alignmix.outputs import MANIFEST_FILE, shards_in

LENGTH_BINS = [0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
TOP_TERMS = 25
EXCERPTS_PER_CATEGORY = 3
EXCERPT_SCAN = 4000  # characters of a flagged document kept to find an excerpt in
EXCERPT_BEFORE, EXCERPT_AFTER = 80, 160  # characters around the first matched term


class ShardError(AlignmixError):
    """A damaged shard: names the file, and the line where that is known."""


def _first_document(shard: Path) -> dict:
    try:
        with gzip.open(shard, "rt", encoding="utf-8") as handle:
            first = handle.readline()
        document = json.loads(first) if first else {}
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{shard}: damaged shard ({exc}); rerun the stage that wrote it") from None
    return document if isinstance(document, dict) else {}


def tagged_shards(folders: list[Path]) -> list[Path]:
    """jsonl.gz shards under the folders whose first document carries `metadata.ai_discourse`, in path order."""
    shards = []
    for folder in folders:
        for shard in shards_in(folder, recursive=True):
            metadata = _first_document(shard).get("metadata")
            if isinstance(metadata, dict) and "ai_discourse" in metadata:
                shards.append(shard)
    return shards


def _damage_in(shard: Path) -> str | None:
    """What makes a shard unreadable (its file and line), or None when every line is a JSON document."""
    number = 0
    try:
        with gzip.open(shard, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                json.loads(line)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        return f"{shard}: damaged after line {number} ({exc})"
    except json.JSONDecodeError as exc:
        return f"{shard}:{number}: not valid JSON ({exc.msg})"
    return None


def mixture_manifests(folders: list[Path]) -> list[Path]:
    return sorted({m for folder in folders for m in folder.rglob(MANIFEST_FILE)})


# The shards' fields that the statistics read. `terms` maps each matched term to its count, with keys that differ
# from document to document, so it is read as text, which polars writes as `{"TERM": N, ...}` with each term as
# is (unescaped), and parsed into (term, count) pairs below.
SHARD_SCHEMA = {
    "text": pl.String,
    "metadata": pl.Struct({
        "source": pl.String,
        "ai_discourse": pl.Struct({
            "flagged": pl.Boolean, "categories": pl.List(pl.String), "stance": pl.String, "terms": pl.String,
        }),
    }),
}
FRAME_SCHEMA = {
    "source": pl.String, "characters": pl.Int64, "tokens": pl.Int64, "flagged": pl.Boolean, "flagged_text": pl.String,
    "categories": pl.List(pl.String), "stance": pl.String,
    "terms": pl.List(pl.Struct({"term": pl.String, "count": pl.Int64})),
}
_PAIR = r'"(.*?)": -?\d+(?:, |\}$)'  # one `"TERM": N` of the text, with what ends it
_TERM_COUNT = r'"(.*)": (-?\d+)(?:, |\}$)'  # the term and count of one pair


def _token_counts(tokenizer) -> pl.Expr:
    def count(texts: pl.Series) -> pl.Series:
        return pl.Series([len(e.ids) for e in tokenizer.encode_batch(texts.to_list())], dtype=pl.Int64)

    return pl.col("text").map_batches(count, return_dtype=pl.Int64)


def document_frame(shards: list[Path], tokenizer=None) -> pl.DataFrame:
    """One row per document of the shards, read by one lazy polars scan over all of them (no Python per
    document, except the tokenizer's batches when token counts are asked for)."""
    if not shards:
        return pl.DataFrame(schema=FRAME_SCHEMA)
    try:
        return _scan(shards, tokenizer)
    except (pl.exceptions.PolarsError, OSError):  # find the damaged shard to name it (polars does not)
        damage = next(filter(None, map(_damage_in, shards)), None)
        if damage is None:
            raise
        raise ShardError(f"{damage}; rerun the stage that wrote it") from None


def _scan(shards: list[Path], tokenizer) -> pl.DataFrame:
    tags = pl.col("metadata").struct.field("ai_discourse")
    stance = tags.struct.field("stance")
    pairs = tags.struct.field("terms").str.extract_all(_PAIR)
    return (
        pl.scan_ndjson(shards, schema=SHARD_SCHEMA, include_file_paths="shard")
        .select(
            source=pl.coalesce(pl.col("metadata").struct.field("source"),
                               pl.col("shard").str.extract(r"([^/]+)/[^/]+$", 1)),
            characters=pl.col("text").str.len_chars().cast(pl.Int64),
            tokens=_token_counts(tokenizer) if tokenizer else pl.lit(None, pl.Int64),
            flagged=tags.struct.field("flagged").fill_null(False),
            flagged_text=pl.when(tags.struct.field("flagged")).then(pl.col("text").str.slice(0, EXCERPT_SCAN)),
            categories=tags.struct.field("categories"),
            stance=pl.when(stance.is_null() | (stance == "")).then(pl.lit("none")).otherwise(stance),
            terms=pairs.list.eval(pl.struct(
                term=pl.element().str.extract(_TERM_COUNT, 1),
                count=pl.element().str.extract(_TERM_COUNT, 2).cast(pl.Int64),
            )),
        )
        .collect()
    )


def _histogram(lengths: pl.Series) -> dict[str, int]:
    counts = {}
    for low, high in zip(LENGTH_BINS, LENGTH_BINS[1:] + [None]):
        inside = lengths >= low if high is None else (lengths >= low) & (lengths < high)
        counts[f"{low}+" if high is None else f"{low}-{high - 1}"] = int(inside.sum())
    return counts


def excerpt(text: str, terms: list[str]) -> str:
    """The text around the earliest of `terms` in it (case-insensitive), with `…` where it was cut."""
    lowered = text.lower()
    found = [i for i in (lowered.find(t.lower()) for t in terms if t) if i >= 0]
    at = min(found) if found else 0
    start, end = max(0, at - EXCERPT_BEFORE), min(len(text), at + EXCERPT_AFTER)
    return ("…" if start else "") + " ".join(text[start:end].split()) + ("…" if end < len(text) else "")


def flagged_excerpts(flagged: pl.DataFrame) -> dict[str, list[str]]:
    """A few flagged documents per category, each as the text around its first matched term."""
    excerpts: dict[str, list[str]] = {}
    for row in flagged.select("categories", "flagged_text", "terms").iter_rows(named=True):
        for category in row["categories"] or []:
            shown = excerpts.setdefault(category, [])
            if len(shown) < EXCERPTS_PER_CATEGORY and row["flagged_text"]:
                shown.append(excerpt(row["flagged_text"], [t["term"] for t in row["terms"] or []]))
    return dict(sorted(excerpts.items()))


def source_statistics(frame: pl.DataFrame) -> dict[str, dict]:
    """Per source: documents, tokens, prevalence by category, the terms matched in flagged documents with a few
    flagged excerpts per category, stance and a length histogram."""
    stats: dict[str, dict] = {}
    for (source,), group in frame.sort("source").group_by(["source"], maintain_order=True):
        documents = group.height
        categories = group.select(pl.col("categories").explode()).drop_nulls().group_by("categories").len()
        flagged = group.filter(pl.col("flagged"))
        terms = (
            flagged.select(pl.col("terms").explode()).drop_nulls().unnest("terms")
            .group_by("term").agg(pl.col("count").sum(), pl.len().alias("documents"))
            .sort(["count", "term"], descending=[True, False]).head(TOP_TERMS)
        )
        length_column = "tokens" if group["tokens"].null_count() == 0 else "characters"
        stats[source] = {
            "documents": documents,
            "tokens": int(group["tokens"].sum()) if length_column == "tokens" else None,
            "characters": int(group["characters"].sum()),
            "flagged": int(group["flagged"].sum()),
            "flag_rate": float(group["flagged"].mean()) if documents else 0.0,
            "categories": {
                row["categories"]: {"documents": row["len"], "prevalence": row["len"] / documents}
                for row in categories.sort("categories").iter_rows(named=True)
            },
            "top_terms": {row["term"]: row["count"] for row in terms.iter_rows(named=True)},  # in flagged documents
            "top_terms_documents": {row["term"]: row["documents"] for row in terms.iter_rows(named=True)},
            "flagged_excerpts": flagged_excerpts(flagged),
            "stance": {
                row["stance"]: row["len"] for row in group.group_by("stance").len().sort("stance").iter_rows(named=True)
            },
            "length_unit": length_column,
            "length_histogram": _histogram(group[length_column]),
        }
    return stats


def stage_compositions(manifests: list[Path]) -> list[dict]:
    """Each mixture's planned and realised tokens per source."""
    stages = []
    for path in manifests:
        manifest = json.loads(path.read_text())
        stages.append({
            "stage": manifest["stage"], "tokens": manifest["tokens"], "seq_len": manifest["seq_len"],
            "manifest": str(path),
            "sources": [
                {k: s[k] for k in ("name", "tokens", "realised_tokens", "share", "repetitions")}
                for s in manifest["sources"]
            ],
        })
    return stages


def collect(folders: list[Path], tokenizer_dir: Path | None = None) -> dict:
    """Everything `alignmix stats` reports, as one JSON-ready mapping."""
    tokenizer = None
    if tokenizer_dir is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    shards = tagged_shards(folders)
    manifests = mixture_manifests(folders)
    if not shards and not manifests:
        raise FileNotFoundError(
            f"no tagged shards (*.jsonl.gz with metadata.ai_discourse) or mixture_manifest.json under"
            f" {', '.join(map(str, folders))}"
        )
    return {
        "inputs": [str(f) for f in folders],
        "tokenizer": str(tokenizer_dir) if tokenizer_dir else None,
        "sources": source_statistics(document_frame(shards, tokenizer)) if shards else {},
        "stages": stage_compositions(manifests),
    }
