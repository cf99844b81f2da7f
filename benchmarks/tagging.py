"""Tagging throughput: read -> tag -> write against a bare datatrove read -> write, and the matcher against naive regex.

Builds 200 MB of real web text by repeating the C4, Wikipedia and Common Crawl samples in ../shared/data (a
generated corpus where that is absent) as 4 jsonl files, then times, in the same run and with the same tasks:
  baseline: datatrove JsonlReader -> JsonlWriter (bare read -> write);
  alignmix: alignmix's counting reader -> AI-discourse tagger -> JsonlWriter, twice: with an empty Hyperscan
  cache (a machine's first run: the database `make` ships for the default lists is loaded; without it the
  tagger compiles once, before the tasks start) and warm. It also prints the seconds a compile takes.
And, on 2 MB of the same text, the blocklist's one-pass Hyperscan matcher against one `re.search` per term form.
Run: .venv/bin/python benchmarks/tagging.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from alignmix.classifiers.blocklist import (
    SHIPPED_DIR,
    Blocklist,
    _compile,
    _is_word_char,
    load_categories,
    term_owners,
    word_pattern,
)
from alignmix.corpus.generate import generate_documents
from alignmix.corpus.readers import CountingJsonlReader
from alignmix.corpus.tag import AIDiscourseTagger

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET_BYTES = 200_000_000
FILES = 4
TASKS = 2


def real_texts() -> list[str]:
    c4 = SHARED / "llama-factory-demo" / "c4_demo.jsonl"
    if not c4.is_file():
        return [d["text"] for d in generate_documents("bench", 5000, 0.05, 0.05, seed=0)]
    texts = [json.loads(line)["text"] for line in c4.read_text().splitlines() if line.strip()]
    texts += [t for t in (SHARED / "llama-factory-demo" / "wiki_demo.txt").read_text().splitlines() if t.strip()]
    for path in sorted((SHARED / "dolma-test-data" / "multiple_files").glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return texts


def write_corpus(folder: Path, texts: list[str]) -> float:
    folder.mkdir(parents=True)
    handles = [(folder / f"{k}.jsonl").open("w") for k in range(FILES)]
    size, index = 0, 0
    while size < TARGET_BYTES:
        line = json.dumps({"id": f"doc-{index}", "text": texts[index % len(texts)]}) + "\n"
        handles[index % FILES].write(line)
        size += len(line.encode())
        index += 1
    for handle in handles:
        handle.close()
    return size / 1e6


def timed_pipeline(build: Callable[[], list], logs: Path) -> float:
    """Seconds to build the steps (the tagger compiles its term database then) and run them."""
    start = time.perf_counter()
    LocalPipelineExecutor(pipeline=build(), tasks=TASKS, workers=TASKS, logging_dir=str(logs)).run()
    return time.perf_counter() - start


def timed_tagging(work: Path, name: str) -> float:
    """alignmix's counting reader -> tagger -> writer."""
    return timed_pipeline(
        lambda: [CountingJsonlReader(str(work / "in"), on_error="skip"), AIDiscourseTagger(),
                 JsonlWriter(str(work / name))],
        work / f"logs-{name}",
    )


def naive_tag(patterns: list[re.Pattern], text: str) -> int:
    return sum(1 for pattern in patterns if pattern.search(text))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="alignmix-tag-bench-"))
    texts = real_texts()
    megabytes = write_corpus(work / "in", texts)
    bare = timed_pipeline(lambda: [JsonlReader(str(work / "in")), JsonlWriter(str(work / "bare"))], work / "logs-bare")
    os.environ["XDG_CACHE_HOME"] = str(work / "cold-cache")  # a machine's first run: nothing in the user's cache
    cold = timed_tagging(work, "cold")
    os.environ.pop("XDG_CACHE_HOME")
    shipped = any(SHIPPED_DIR.glob("*.hsdb"))
    start = time.perf_counter()
    _compile([word_pattern(form) for form in term_owners(load_categories())])
    compile_seconds = time.perf_counter() - start
    Blocklist.from_lists()  # the user's cache, warm
    tagged = timed_tagging(work, "warm")
    ratio, cold_ratio = tagged / bare, cold / bare
    print(f"corpus: {megabytes:.0f} MB in {FILES} jsonl files, {TASKS} tasks")
    print(f"bare datatrove read -> write: {bare:.1f}s ({megabytes / bare / TASKS:.1f} MB/s per core)")
    print(f"alignmix read -> tag -> write: {tagged:.1f}s ({megabytes / tagged / TASKS:.1f} MB/s per core);"
          f" first run (empty cache{', database shipped at install' if shipped else ''}): {cold:.1f}s"
          f" (ratio {cold_ratio:.3f}); compiling the database from nothing takes {compile_seconds:.1f}s")

    blocklist = Blocklist.from_lists()
    forms = list(blocklist._owners)
    patterns = [
        re.compile(("\\b" if _is_word_char(f[0]) else "") + re.escape(f).replace("\\ ", "\\s+")
                   + ("\\b" if _is_word_char(f[-1]) else ""), re.IGNORECASE)
        for f in forms
    ]
    sample, size = [], 0
    for text in texts:
        if size > 2_000_000:
            break
        sample.append(text)
        size += len(text.encode())
    start = time.perf_counter()
    for text in sample:
        blocklist.tag(text)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    for text in sample:
        naive_tag(patterns, text)
    naive = time.perf_counter() - start
    print(f"matcher on {size / 1e6:.1f} MB, {len(forms):,} term forms: hyperscan {size / 1e6 / fast:.1f} MB/s,"
          f" one re.search per form {size / 1e6 / naive:.2f} MB/s: {naive / fast:.0f}x faster")
    shutil.rmtree(work)
    print(json.dumps({
        "benchmark": "tagging", "ratio": round(ratio, 3), "target": "<= 1.3",
        "baseline": "bare datatrove read -> write", "met": ratio <= 1.3 and cold_ratio <= 1.3,
        "cold_cache_ratio": round(cold_ratio, 3), "shipped_database": shipped,
        "compile_seconds": round(compile_seconds, 2),
        "matcher_speedup_over_naive_regex": round(naive / fast, 1), "matcher_target": ">= 10",
        "mb_per_s_per_core": round(megabytes / tagged / TASKS, 2),
    }))


if __name__ == "__main__":
    main()
