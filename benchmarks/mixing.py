"""Mixing throughput: select + tokenize + shuffle + write LitData chunks, against raw `tokenizers` encode_batch.

Builds about 40 MB of real web text by repeating the C4, Wikipedia and Common Crawl samples in ../shared/data
(or a generated corpus where that is absent), writes it as tagged shards, and times, in the same run:
  baseline: `Tokenizer.encode_batch` over the same texts, already in memory (the limit for this step);
  alignmix: `build_stage_mixture` from the shards on disk to finished chunks (the token store, the index and
  the chunks), with 1 and with 2 tasks (target >= 0.9 with 1 task);
  selection: the same 1-task mixture with a three-condition `select` (flagged, categories, a metadata field
  range) that keeps every document, against the plain `{flagged: false}` one (target >= 0.95);
  ray: the 2-task mixture with `executor: ray` (datatrove's RayPipelineExecutor on a local Ray cluster, the
  tokenized parts on disk) against the in-process 2-task mixer (target >= 0.9), and whether the chunks are equal,
  on this corpus (one run each) and on a larger one (--ray-megabytes, default 120; taking turns, best of
  --ray-rounds, default 2, as this shared machine's load moves single runs by seconds). A mixture on Ray is two
  launches of tasks (tokenizing, then chunk writing), each starting fresh worker processes (the chunk writers
  import torch for LitData): a cost of a few seconds whatever the corpus, so the ratio is reported at both
  sizes, with the seconds Ray adds.
Run: .venv/bin/python benchmarks/mixing.py [--ray-megabytes 120] [--ray-rounds 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from alignmix.checkpoints.tokenizer import load_tokenizer
from alignmix.corpus.generate import generate_documents
from alignmix.corpus.mix import build_stage_mixture
from alignmix.corpus.tokenizer import install_tokenizer, train_bpe
from alignmix.jsonl import write_jsonl_gz
from alignmix.recipe import TrainingStage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET_BYTES = 40_000_000
SHARDS = 8


def real_texts() -> list[str]:
    texts = []
    c4 = SHARED / "llama-factory-demo" / "c4_demo.jsonl"
    if c4.is_file():
        texts += [json.loads(line)["text"] for line in c4.read_text().splitlines() if line.strip()]
        texts += [t for t in (SHARED / "llama-factory-demo" / "wiki_demo.txt").read_text().splitlines() if t.strip()]
        for path in sorted((SHARED / "dolma-test-data" / "multiple_files").glob("*.jsonl")):
            texts += [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
        return texts
    return [d["text"] for d in generate_documents("bench", 5000, 0.05, 0.05, seed=0)]


def corpus(folder: Path, target_bytes: int = TARGET_BYTES) -> tuple[list[Path], list[str]]:
    base = real_texts()
    rows, size, index = [], 0, 0
    while size < target_bytes:
        text = base[index % len(base)]
        tags = {"flagged": False, "categories": [], "terms": {}, "score": None, "stance": None}
        rows.append({"id": f"doc-{index}", "text": text, "metadata": {"ai_discourse": tags, "quality": index % 10 / 10}})
        size += len(text.encode())
        index += 1
    paths = [folder / "web" / "data" / f"{k:05d}.jsonl.gz" for k in range(SHARDS)]
    for k, path in enumerate(paths):
        write_jsonl_gz(path, rows[k::SHARDS])
    return paths, [r["text"] for r in rows]


def web_stage(tokens: int) -> TrainingStage:
    return TrainingStage(name="bench", tokens=tokens, seq_len=2048,
                         mixture=[{"source": "web", "select": {"flagged": False}, "share": "rest"}])


def ray_against_in_process(shards: list[Path], tokens: int, tokenizer_dir: Path, work: Path,
                           rounds: int) -> tuple[float, float, bool]:
    """The 2-task mixture in process and on Ray, taking turns for `rounds`, best of each: (ratio of rates,
    seconds Ray adds, chunks all equal)."""
    seconds: dict[str | None, float] = {None: float("inf"), "ray": float("inf")}
    chunks = []
    for turn in range(rounds):
        for executor in (None, "ray"):
            start = time.perf_counter()
            manifest = build_stage_mixture(web_stage(tokens), {"web": shards}, tokenizer_dir,
                                           work / f"mix-{executor}-{turn}", seed=0, tasks=2, executor=executor)
            seconds[executor] = min(seconds[executor], time.perf_counter() - start)
            chunks.append(manifest["chunks"])
    return seconds[None] / seconds["ray"], seconds["ray"] - seconds[None], all(c == chunks[0] for c in chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-megabytes", type=float, default=120.0, help="The larger corpus for the Ray comparison.")
    parser.add_argument("--ray-rounds", type=int, default=2, help="Turns of in-process then Ray on it; best of each.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alignmix-bench-"))
    shards, texts = corpus(work)
    neox = SHARED / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json"
    tokenizer_dir = install_tokenizer(neox, work / "tok") if neox.is_file() else train_bpe(texts, 8000, work / "tok")
    tokenizer, _ = load_tokenizer(tokenizer_dir)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6

    start = time.perf_counter()
    total_tokens = sum(len(e.ids) + 1 for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    baseline_seconds = time.perf_counter() - start
    baseline_rate = total_tokens / baseline_seconds
    print(f"corpus: {len(texts):,} documents, {megabytes:.1f} MB, {total_tokens:,} tokens ({tokenizer_dir})")
    print(f"baseline tokenizers encode_batch: {baseline_seconds:.2f}s, {baseline_rate:,.0f} tokens/s")

    stage = web_stage(total_tokens)
    rates, manifests = {}, {}
    for tasks in (1, 2):
        start = time.perf_counter()
        manifests[tasks] = build_stage_mixture(stage, {"web": shards}, tokenizer_dir, work / f"mix-{tasks}", seed=0,
                                               tasks=tasks)
        seconds = time.perf_counter() - start
        rates[tasks] = total_tokens / seconds
        print(f"alignmix mix, {tasks} task(s): {seconds:.2f}s, {rates[tasks]:,.0f} tokens/s,"
              f" {megabytes / seconds:.1f} MB/s")
    ratio = rates[1] / baseline_rate
    print(f"scaling 1 -> 2 tasks: {rates[2] / rates[1]:.2f}x")
    select = {"flagged": False, "categories": {"none": ["negative_verbs"]}, "fields": {"quality": {"min": 0.0}}}
    selective = TrainingStage(name="bench", tokens=total_tokens, seq_len=2048,
                              mixture=[{"source": "web", "select": select, "share": "rest"}])
    start = time.perf_counter()
    build_stage_mixture(selective, {"web": shards}, tokenizer_dir, work / "mix-select", seed=0)
    selection_ratio = total_tokens / (time.perf_counter() - start) / rates[1]
    print(f"alignmix mix, three-condition selection, 1 task: {selection_ratio:.3f} of the plain-select rate")
    import ray

    ray.init(include_dashboard=False, log_to_driver=False)  # started before the clock: a cluster is already up
    start = time.perf_counter()
    on_ray = build_stage_mixture(stage, {"web": shards}, tokenizer_dir, work / "mix-ray", seed=0, tasks=2,
                                 executor="ray")
    ray_seconds = time.perf_counter() - start
    small_ratio = total_tokens / ray_seconds / rates[2]
    same = on_ray["chunks"] == manifests[2]["chunks"] == manifests[1]["chunks"]
    print(f"alignmix mix on Ray, 2 tasks, {megabytes:.0f} MB: {small_ratio:.3f} of the in-process 2-task rate"
          f" (+{ray_seconds - total_tokens / rates[2]:.1f}s); chunks equal: {same}")
    large_shards, large_texts = corpus(work / "large", int(args.ray_megabytes * 1e6))
    large_tokens = sum(len(e.ids) + 1 for e in tokenizer.encode_batch(large_texts, add_special_tokens=False))
    del large_texts
    ray_ratio, added, large_same = ray_against_in_process(large_shards, large_tokens, tokenizer_dir, work / "large",
                                                         args.ray_rounds)
    same = same and large_same
    print(f"alignmix mix on Ray, 2 tasks, {args.ray_megabytes:.0f} MB ({large_tokens:,} tokens): {ray_ratio:.3f} of the"
          f" in-process 2-task rate (+{added:.1f}s, best of {args.ray_rounds}); chunks equal: {large_same}")
    print(json.dumps({
        "benchmark": "mixing", "ratio": round(ratio, 3), "target": ">= 0.9",
        "baseline": "tokenizers encode_batch on the same text, in memory", "met": ratio >= 0.9,
        "ratio_2_tasks": round(rates[2] / baseline_rate, 3), "scaling_1_to_2_tasks": round(rates[2] / rates[1], 3),
        "selection_ratio": round(selection_ratio, 3), "selection_target": ">= 0.95",
        "selection_baseline": "the same mixture with select {flagged: false}", "selection_met": selection_ratio >= 0.95,
        "ray_ratio": round(ray_ratio, 3), "ray_target": ">= 0.9",
        "ray_baseline": f"the in-process mixer, 2 tasks, {args.ray_megabytes:.0f} MB, best of {args.ray_rounds}",
        "ray_ratio_small_corpus": round(small_ratio, 3), "ray_seconds_added": round(added, 1),
        "ray_met": ray_ratio >= 0.9, "ray_chunks_equal": same,
    }))


if __name__ == "__main__":
    main()
