"""Mixing at corpus scale: the memory and speed of selecting, drawing and writing a mixture index.

Builds a synthetic token store directly (no tokenizing): N documents in shards of 1M, each 8 to 80 tokens long
(the token files are sparse: selection and the draw never read tokens), with `ai_discourse` tags (flagged,
stance, score) and a `quality` metadata field, at two sizes (default 10M and 50M documents). For each size a
fresh process, on one core (POLARS_MAX_THREADS=1), selects and draws a two-entry mixture (5% aligned documents,
the rest unflagged ones, the stage's tokens equal to the store's) and writes its index: `mix.select_documents`
and `mix.draw_index`, what `alignmix run`'s mix stage does before writing chunks. It reports:
  bytes per document: the slope of the process's peak resident memory between the two sizes (target <= 48);
  documents per second through selection, draw and index write at the larger size (target >= 2M on one core);
  the extrapolation to 400M documents (the paper's 500B-token DCLM mixture): memory and time.
Run: .venv/bin/python benchmarks/mixing_scale.py [--sizes 10000000 50000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

SHARD_DOCUMENTS = 1_000_000
PAPER_DOCUMENTS = 400_000_000


def build_store(folder: Path, documents: int) -> int:
    """A token store of `documents` synthetic documents; returns its tokens."""
    from alignmix.outputs import STORE_FILE, TokenStore

    store = TokenStore(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    total = 0
    shards = -(-documents // SHARD_DOCUMENTS)
    for shard in range(shards):
        n = min(SHARD_DOCUMENTS, documents - shard * SHARD_DOCUMENTS)
        lengths = rng.integers(8, 81, n, dtype=np.uint32)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(store.offsets_path(shard), offsets)
        tokens = np.lib.format.open_memmap(store.tokens_path(shard), mode="w+", dtype=np.uint16, shape=(int(offsets[-1]),))
        del tokens  # sparse: never written
        kind = rng.random(n)
        first = shard * SHARD_DOCUMENTS
        pl.DataFrame({
            "id": pl.int_range(first, first + n, eager=True).cast(pl.String),
            "id_hash": rng.integers(0, 2**63, n, dtype=np.uint64),
            "tokens": lengths,
            "contaminated": kind < 0.001,
            "metadata.ai_discourse.flagged": kind < 0.1,
            "kind": kind,
            "metadata.ai_discourse.score": np.where(kind < 0.1, kind * 10, np.nan),
            "metadata.quality": rng.random(n),
        }).with_columns(**{"metadata.ai_discourse.stance": pl.when(pl.col("kind") < 0.05).then(pl.lit("aligned"))
                           .when(pl.col("kind") < 0.1).then(pl.lit("misaligned"))}).drop("kind").write_parquet(
            store.table_path(shard))
        total += int(offsets[-1])
    (folder / STORE_FILE).write_text(json.dumps({"shards": shards, "dtype": "uint16", "documents": documents,
                                                 "tokens": total, "decontamination": None}))
    return total


def measure(store_dir: Path, out_dir: Path) -> None:
    """In a fresh process: select, draw and write the index; prints seconds and peak memory as JSON."""
    from alignmix.corpus.mix import draw_index, select_documents
    from alignmix.corpus.plan import entry_name, plan_stage
    from alignmix.outputs import MixtureIndex, TokenStore
    from alignmix.recipe import TrainingStage

    store = TokenStore(store_dir)
    stage = TrainingStage(name="pretrain", tokens=store.summary["tokens"], seq_len=2048, mixture=[
        {"source": "web", "select": {"stance": "aligned"}, "share": 0.05, "max_repetitions": 100},
        {"source": "web", "select": {"flagged": False}, "share": "rest", "max_repetitions": 100},
    ])
    start = time.perf_counter()
    selections = {entry_name(e): select_documents(store, e.select) for e in stage.mixture}
    selected = time.perf_counter()
    plan = plan_stage(stage, {name: int(s.lengths.sum(dtype=np.int64)) for name, s in selections.items()})
    origins = [{"name": entry_name(e), "source": "web"} for e in stage.mixture]
    stats = draw_index(stage, selections, origins, plan, 0, MixtureIndex.of(out_dir))
    end = time.perf_counter()
    print(json.dumps({"seconds": end - start, "select_seconds": selected - start,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "pieces": int(MixtureIndex.of(out_dir).column("take").size),
                      "documents_used": sum(s.documents_used for s in stats.values())}))


def baseline_rss() -> int:
    """The peak memory of a process that has imported the same modules and done nothing."""
    code = ("import resource; import alignmix.corpus.mix, alignmix.corpus.plan; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "POLARS_MAX_THREADS": "1"}).stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000_000, 50_000_000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alignmix-mixing-scale-"))
    results = {}
    try:
        for documents in args.sizes:
            started = time.perf_counter()
            tokens = build_store(work / f"store-{documents}", documents)
            print(f"store of {documents:,} documents ({tokens:,} tokens) built in {time.perf_counter() - started:.0f} s",
                  flush=True)
            run = subprocess.run([sys.executable, __file__, "--measure", str(work / f"store-{documents}"),
                                  str(work / f"mix-{documents}")], capture_output=True, text=True,
                                 env={**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"})
            if run.returncode != 0:
                sys.exit(run.stderr[-3000:])
            results[documents] = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{documents:,} documents: {json.dumps(results[documents])}", flush=True)
            shutil.rmtree(work / f"store-{documents}")
            shutil.rmtree(work / f"mix-{documents}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = args.sizes
    per_document = (results[large]["peak_rss_bytes"] - results[small]["peak_rss_bytes"]) / (large - small)
    rate = large / results[large]["seconds"]
    fixed = results[small]["peak_rss_bytes"] - per_document * small
    paper_memory = fixed + per_document * PAPER_DOCUMENTS
    print(json.dumps({
        "benchmark": "mixing_scale", "sizes": args.sizes,
        "bytes_per_document": round(per_document, 1), "bytes_per_document_target": "<= 48",
        "documents_per_second": round(rate), "documents_per_second_target": ">= 2000000 (one core)",
        "met": per_document <= 48 and rate >= 2_000_000,
        "seconds": {n: round(r["seconds"], 2) for n, r in results.items()},
        "select_seconds": {n: round(r["select_seconds"], 2) for n, r in results.items()},
        "peak_rss_mb": {n: round(r["peak_rss_bytes"] / 1e6) for n, r in results.items()},
        "baseline_rss_mb": round(baseline_rss() / 1e6),
        "extrapolated_400M_documents": {"memory_gb": round(paper_memory / 1e9, 1),
                                        "minutes": round(PAPER_DOCUMENTS / rate / 60, 1)},
        "baseline": "issue 25's measurement of the previous mixer: about 1,600 bytes per document",
    }))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        measure(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
