"""`alignmix stats` reading tagged shards: one polars scan over every shard against a per-document Python loop.

Writes 40 gzipped shards of 5,000 generated documents each, with AI-discourse tags (terms whose keys differ from
document to document, categories, stance), then times, in the same run:
  baseline: gzip + json.loads per line, building each document's row in Python (how `stats` read before);
  alignmix: `report.corpus_stats.document_frame`, the lazy polars scan `alignmix stats` uses.
Both give the same statistics (checked). Ratio: the baseline's seconds over alignmix's.
Run: .venv/bin/python benchmarks/corpus_stats.py
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from alignmix.corpus.generate import generate_documents
from alignmix.report.corpus_stats import FRAME_SCHEMA, document_frame, source_statistics

SHARDS = 40
DOCUMENTS_PER_SHARD = 5_000
TERMS = ["AI", "robot", "Skynet", "HAL 9000", "superintelligence", "chatbot", "neural network", "AGI"]


def write_shards(folder: Path) -> list[Path]:
    rng = random.Random(0)
    documents = generate_documents("web", SHARDS * DOCUMENTS_PER_SHARD, 0.05, 0.05, seed=0)
    shards = []
    for index in range(SHARDS):
        shard = folder / "web" / f"{index:05d}.jsonl.gz"
        shard.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(shard, "wt", encoding="utf-8") as handle:
            for _ in range(DOCUMENTS_PER_SHARD):
                doc = next(documents)
                terms = {t: rng.randint(1, 3) for t in rng.sample(TERMS, rng.randint(0, 3))}
                doc["metadata"]["ai_discourse"] = {
                    "flagged": bool(terms), "categories": ["general_ai"] if terms else [], "terms": terms,
                    "score": None, "stance": rng.choice([None, "aligned", "misaligned"]) if terms else None,
                }
                handle.write(json.dumps(doc) + "\n")
        shards.append(shard)
    return shards


def python_loop_frame(shards: list[Path]) -> pl.DataFrame:
    rows = []
    for shard in shards:
        with gzip.open(shard, "rt", encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                tags = doc["metadata"]["ai_discourse"]
                rows.append({
                    "source": doc["metadata"].get("source", shard.parent.name), "characters": len(doc["text"]),
                    "tokens": None, "flagged": bool(tags["flagged"]), "categories": tags["categories"],
                    "stance": tags.get("stance") or "none",
                    "terms": [{"term": k, "count": v} for k, v in tags["terms"].items()],
                })
    return pl.DataFrame(rows, schema=FRAME_SCHEMA)


def timed(read, shards: list[Path]) -> tuple[float, dict]:
    start = time.perf_counter()
    statistics = source_statistics(read(shards))
    return time.perf_counter() - start, statistics


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="alignmix-stats-bench-"))
    shards = write_shards(work)
    megabytes = sum(s.stat().st_size for s in shards) / 1e6
    baseline, expected = timed(python_loop_frame, shards)
    polars_seconds, statistics = timed(document_frame, shards)
    assert statistics == expected, "the polars scan and the Python loop disagree"
    documents = SHARDS * DOCUMENTS_PER_SHARD
    print(f"{documents:,} documents in {SHARDS} shards ({megabytes:.0f} MB gzipped): per-document Python loop"
          f" {baseline:.2f} s, polars scan {polars_seconds:.2f} s")
    shutil.rmtree(work)
    ratio = baseline / polars_seconds
    print(json.dumps({
        "benchmark": "corpus_stats", "ratio": round(ratio, 2), "target": ">= 2",
        "baseline": "gzip + json.loads per document in Python", "met": ratio >= 2,
        "documents_per_s": round(documents / polars_seconds),
    }))


if __name__ == "__main__":
    main()
