"""Synthetic documents per minute through vLLM against the transformers backend, same model and prompts.

Both write the same synthetic-document requests (builtin:tiny training-split scenarios x surface forms, aligned
stance) with SmolLM2-135M-Instruct, through `generate_set` (the synth stage's path: resumable runner, then
post-processing): vLLM from `.venv-vllm` started by alignmix (`LocalServer`; its start-up time is reported
apart, not counted), and `TransformersBackend` in this process. On a GPU machine, set $ALIGNMIX_VLLM to a
vllm executable and pass --device cuda for the transformers side.

    .venv/bin/python benchmarks/generation.py [--documents 16] [--max-tokens 256] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from alignmix.checkpoints.gguf import dequantise_gguf, smollm2_gguf
from alignmix.llm.backend import Sampling, open_backend
from alignmix.llm.local import TransformersBackend
from alignmix.llm.server import LocalServer
from alignmix.scenarios import load_scenarios
from alignmix.synth.documents import DocumentSpec, generate_set, plan_documents
from alignmix.synth.postprocess import Bounds
from alignmix.synth.prompts import DocumentTemplates


def run(backend, name: str, spec: DocumentSpec, work: Path, documents: int, concurrency: int) -> dict:
    """The first `documents` requests through `backend`, planned for its model (answers are stamped with it)."""
    plan = plan_documents(load_scenarios("builtin:tiny"), spec, DocumentTemplates.load(), name, backend.model)
    plan.requests[:] = plan.requests[:documents]
    start = time.perf_counter()
    job, stats = generate_set(plan, spec, backend, work / name, work / f"{name}.jsonl", concurrency)
    seconds = time.perf_counter() - start
    rate = job.answered / seconds * 60
    print(f"{name}: {job.answered} documents answered ({stats['kept']} kept after post-processing, failed"
          f" {job.failed}) in {seconds:.1f} s: {rate:.1f} documents/min, {stats['tokens']['completion']:,}"
          f" completion tokens ({stats['tokens']['completion'] / seconds:.0f} tokens/s)")
    return {"documents": job.answered, "kept": stats["kept"], "seconds": round(seconds, 1),
            "documents_per_min": round(rate, 2), "completion_tokens": stats["tokens"]["completion"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alignmix-generation-") as scratch:
        work = Path(scratch)
        folder = dequantise_gguf(smollm2_gguf(), work / "SmolLM2-135M-Instruct")
        spec = DocumentSpec(surface_forms=("news_article",), stances=("aligned",),
                            sampling=Sampling(args.max_tokens, 0.7, 1.0, 1234), bounds=Bounds(40, 4000))
        started = time.perf_counter()
        with LocalServer(folder, "smollm2", work / "vllm.log") as server:
            startup = time.perf_counter() - started
            print(f"vLLM answered after {startup:.0f} s")
            served = run(open_backend("vllm", "smollm2", server.base_url, connections=args.concurrency), "vllm",
                         spec, work, args.documents, args.concurrency)
        local = run(TransformersBackend(str(folder), args.device), "transformers", spec, work, args.documents,
                    args.concurrency)
    ratio = served["documents_per_min"] / local["documents_per_min"]
    print(f"vLLM / transformers: {ratio:.2f}x documents per minute")
    print(json.dumps({"vllm": served, "transformers": local, "vllm_startup_s": round(startup, 1),
                      "ratio": round(ratio, 2), "max_tokens": args.max_tokens, "concurrency": args.concurrency}))


if __name__ == "__main__":
    main()
