"""Sweep cost: a 3-condition sweep against three independent runs of the same recipes.

The conditions differ only in the last training stage (`post_training.dpo.beta` of recipes/tiny.yaml: 0.5, 1, 2),
so the sweep runs the shared prefix (corpus, tagging, synthesis, tokenizer, mixture, pretraining, SFT and their
evals) once and DPO, its eval and the report three times. Baseline: `alignmix run` of each condition's recipe
into its own folder, from nothing, in the same run. Target: the sweep takes <= 0.6 of the three runs' time.
Run: .venv/bin/python benchmarks/sweep.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "tiny.yaml"
BETAS = ("0.5", "1.0", "2.0")


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="alignmix-sweep-bench-"))
    alignmix = [sys.executable, "-m", "alignmix"]
    runs = sum(timed([*alignmix, "run", str(RECIPE), "--set", f"post_training.dpo.beta={beta}", "--out",
                      str(work / f"run-{beta}")]) for beta in BETAS)
    print(f"three independent runs: {runs:.1f} s", flush=True)
    sweep = timed([*alignmix, "sweep", str(RECIPE), "--set", f"post_training.dpo.beta={','.join(BETAS)}",
                   "--out", str(work / "sweep")])
    shared = [c["shared_stages"] for c in json.loads((work / "sweep" / "sweep.json").read_text())["conditions"]]
    ratio = sweep / runs
    print(f"a 3-condition sweep: {sweep:.1f} s (stages shared by the 2nd and 3rd conditions: {shared[1]})")
    shutil.rmtree(work)
    print(json.dumps({"benchmark": "sweep", "ratio": round(ratio, 3), "target": "<= 0.6",
                      "baseline": "three independent alignmix runs of the same conditions", "met": ratio <= 0.6,
                      "sweep_seconds": round(sweep, 1), "runs_seconds": round(runs, 1), "shared_stages": shared[1]}))


if __name__ == "__main__":
    main()
