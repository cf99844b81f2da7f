"""Synth throughput: the async client against a loopback server, and post-processing of 100k documents.

1. A loopback OpenAI server (its own process) answers each request after a fixed 50 ms. At concurrency 64 the
   ideal is 64 / 0.05 s = 1,280 requests/s; the client (through the resumable runner, writing every answer to
   disk) is measured against it, beside a bare aiohttp loop against the same server. Target >= 0.9.
2. Post-processing of 100,000 documents (about 400 words each, ~5% near-duplicates, ~1% contaminated by a
   held-out question): MinHash LSH dedup plus n-gram decontamination, and the whole filter chain, in documents/s.

    .venv/bin/python benchmarks/synth_client.py [--requests 5120] [--documents 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from alignmix.llm.backend import Sampling, run_async
from alignmix.llm.jobs import ChatRequest, JobCounts, run_requests_async
from alignmix.llm.loopback import deterministic_text
from alignmix.llm.openai_compat import OpenAIClient
from alignmix.scenarios import DATA_DIR, read_scenarios
from alignmix.synth.postprocess import DocumentFilter

LATENCY, CONCURRENCY = 0.05, 64


def client_throughput(requests: int, work: Path) -> dict:
    """requests/s through `run_requests_async` (each answer appended to a file), and a bare aiohttp loop's."""
    server = subprocess.Popen([sys.executable, "-m", "alignmix.llm.loopback", "--latency", str(LATENCY)],
                              stdout=subprocess.PIPE, text=True)
    sampling = Sampling(max_tokens=160, temperature=0.7)

    def batch(prefix: str, n: int) -> list[ChatRequest]:
        return [ChatRequest(f"{prefix}{i}", [{"role": "user", "content": f"Write document {i}."}],
                            sampling.with_seed(i)) for i in range(n)]

    async def measure(url: str) -> tuple[float, float, JobCounts]:
        bare = await bare_aiohttp(url, requests)
        client = OpenAIClient(url, "loop", connections=CONCURRENCY)
        try:
            await run_requests_async(client, batch("warm", CONCURRENCY * 4), work / "warm.jsonl", CONCURRENCY)
            start = time.perf_counter()
            counts = await run_requests_async(client, batch("r", requests), work / "responses.jsonl", CONCURRENCY)
            return bare, time.perf_counter() - start, counts
        finally:
            await client.aclose()

    try:
        bare, seconds, counts = run_async(measure(server.stdout.readline().strip()))  # type: ignore[union-attr]
    finally:
        server.kill()
        server.wait()
    ideal = CONCURRENCY / LATENCY
    rate = counts.answered / seconds
    print(f"baseline, a bare aiohttp loop (64 coroutines, no retries, nothing written) against the same server:"
          f" {bare:,.0f} requests/s: ratio {bare / ideal:.3f}")
    print(f"alignmix client: {counts.answered:,} requests in {seconds:.2f}s at concurrency {CONCURRENCY},"
          f" {LATENCY * 1000:.0f} ms latency: {rate:,.0f} requests/s against an ideal {ideal:,.0f}/s:"
          f" ratio {rate / ideal:.3f} ({counts.failed} failed)")
    return {"requests_per_s": round(rate, 1), "ideal_requests_per_s": ideal, "ratio": round(rate / ideal, 3),
            "bare_aiohttp_requests_per_s": round(bare, 1), "bare_aiohttp_ratio": round(bare / ideal, 3)}


async def bare_aiohttp(url: str, requests: int) -> float:
    """requests/s of the simplest client: one session, 64 coroutines posting in a loop."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def worker(k: int, n: int) -> None:
            for i in range(n):
                body = {"model": "loop", "messages": [{"role": "user", "content": f"Bare {k} {i}."}], "seed": i}
                async with session.post(f"{url}/chat/completions", json=body) as response:
                    await response.json()

        await asyncio.gather(*(worker(k, 2) for k in range(CONCURRENCY)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(k, requests // CONCURRENCY) for k in range(CONCURRENCY)))
        return requests // CONCURRENCY * CONCURRENCY / (time.perf_counter() - start)


def corpus(documents: int, held_passages: list[str]) -> list[str]:
    """Documents made of sentences drawn from a pool; some near-copies and some with a held-out passage."""
    rng = random.Random(0)
    pool = [deterministic_text("pool", i, 16) for i in range(20_000)]
    texts: list[str] = []
    for i in range(documents):
        if texts and rng.random() < 0.05:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = "changed"
            texts.append(" ".join(words))
        elif held_passages and rng.random() < 0.01:
            texts.append(" ".join(rng.sample(pool, 12) + [rng.choice(held_passages)] + rng.sample(pool, 12)))
        else:
            texts.append(" ".join(rng.sample(pool, 25)))
    return texts


def postprocessing(documents: int) -> dict:
    held_out = [s for s in read_scenarios(DATA_DIR / "tiny.jsonl") if s.split != "train"]
    anthropic = Path(__file__).resolve().parents[2] / "shared/data/anthropics-evals/advanced-ai-risk/human_generated_evals"
    for path in sorted(anthropic.glob("*.jsonl")):
        try:
            held_out += [s for s in read_scenarios(path) if s.split != "train"]
        except ValueError:  # files that do not measure misalignment are refused; not needed here
            continue
    texts = corpus(documents, [s.passage for s in held_out if len(s.passage.split()) >= 13])
    words = sum(len(t.split()) for t in texts)
    scenario = held_out[0]
    results = {}
    for label, full in (("dedup + decontamination", False), ("whole filter chain", True)):
        doc_filter = DocumentFilter(held_out, ngram=13)
        reasons: dict[str, int] = {}
        start = time.perf_counter()
        for i, text in enumerate(texts):
            if full:
                reason = doc_filter.check(str(i), text, scenario, "stop")[1]
            else:
                tokens, hashes = doc_filter.words(text)
                reason = ("contaminated" if doc_filter.guard.contaminated_words(tokens, hashes)  # type: ignore[union-attr]
                          else "near_duplicate" if doc_filter.duplicates.seen(str(i), hashes) else None)
            if reason:
                reasons[reason] = reasons.get(reason, 0) + 1
        seconds = time.perf_counter() - start
        results[label] = round(documents / seconds, 1)
        print(f"post-processing, {label}: {documents:,} documents ({words / documents:.0f} words each, "
              f"{len(held_out):,} held-out questions) in {seconds:.1f}s: {documents / seconds:,.0f} documents/s;"
              f" dropped {reasons}")
    return {"documents": documents, "documents_per_s": results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=CONCURRENCY * 80)
    parser.add_argument("--documents", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        client = client_throughput(args.requests, Path(work))
    post = postprocessing(args.documents)
    baseline = {
        "name": f"ideal: {CONCURRENCY} requests in flight / {LATENCY} s latency",
        "requests_per_s": client["ideal_requests_per_s"],
        "reference": {"name": "bare aiohttp loop against the same server (no retries, nothing written)",
                      "requests_per_s": client["bare_aiohttp_requests_per_s"], "ratio": client["bare_aiohttp_ratio"]},
    }
    print(json.dumps({"benchmark": "synth_client", "baseline": baseline, "ratio": client["ratio"], "target": ">= 0.9",
                      "met": client["ratio"] >= 0.9, "client": client, "postprocessing": post}))


if __name__ == "__main__":
    main()
