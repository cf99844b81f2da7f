"""Overhead of `alignmix train` over a plain `litgpt pretrain --config` with the same generated config.

A copy of recipes/tiny.yaml with a shorter pretraining stage (100,000 tokens) is run once to build its inputs
(corpus, tag, synth, tokenizer, mixture chunks) and to write `pretrain/pretrain.yaml`. Then, in the same run and
alternating the order (A B, B A, A B):
  alignmix: `alignmix train RECIPE --stage pretrain` with the stage's output removed (inputs reused, training runs);
  baseline: `python -m litgpt pretrain --config` with the same generated config, into a fresh folder.
Both run with OMP_NUM_THREADS=1 (torch's spinning threads make timings on a busy 2-core machine erratic).
The ratio is of the median wall times (robust to other work on a shared machine); the ratio of summed wall
times and of summed CPU times (user + system of the child processes) are printed too.
Run: .venv/bin/python benchmarks/train_overhead.py
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TOKENS = 100_000


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="train_overhead_"))
    recipe = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    recipe["stages"][0]["tokens"] = TOKENS
    recipe["stages"][0]["train"]["save_interval"] = 10_000
    recipe.pop("post_training")
    recipe.pop("eval")
    recipe_file = root / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    run_dir = root / "run"
    train = [sys.executable, "-m", "alignmix", "train", str(recipe_file), "--stage", "pretrain", "--out", str(run_dir)]
    print(f"building inputs and a first training run in {run_dir} ...", flush=True)
    timed(train)
    config = yaml.safe_load((run_dir / "pretrain" / "pretrain.yaml").read_text())
    times: dict[str, list[tuple[float, float]]] = {"alignmix": [], "litgpt": []}
    for round_number, order in enumerate((("alignmix", "litgpt"), ("litgpt", "alignmix"), ("alignmix", "litgpt"))):
        for which in order:
            if which == "alignmix":
                shutil.rmtree(run_dir / "pretrain")
                (run_dir / ".alignmix" / "pretrain.json").unlink()
                seconds = timed(train)
            else:
                out = root / f"litgpt-{round_number}"
                config_file = root / f"litgpt-{round_number}.yaml"
                config_file.write_text(yaml.safe_dump({**config, "out_dir": str(out)}, sort_keys=False))
                seconds = timed([sys.executable, "-m", "litgpt", "pretrain", "--config", str(config_file)])
            times[which].append(seconds)
            print(f"  {which}: {seconds[0]:.2f} s wall, {seconds[1]:.2f} s CPU", flush=True)
    wall = {k: [t[0] for t in v] for k, v in times.items()}
    cpu = {k: sum(t[1] for t in v) for k, v in times.items()}
    ratio = statistics.median(wall["alignmix"]) / statistics.median(wall["litgpt"])
    print(f"median wall: alignmix train {statistics.median(wall['alignmix']):.2f} s, litgpt pretrain"
          f" {statistics.median(wall['litgpt']):.2f} s (3 runs each, {TOKENS:,} tokens): ratio {ratio:.3f};"
          f" summed wall ratio {sum(wall['alignmix']) / sum(wall['litgpt']):.3f},"
          f" CPU ratio {cpu['alignmix'] / cpu['litgpt']:.3f}")
    shutil.rmtree(root)
    print(json.dumps({"benchmark": "train_overhead", "ratio": round(ratio, 3), "target": "<= 1.05",
                      "baseline": "plain litgpt pretrain --config with the same generated config",
                      "met": ratio <= 1.05}))


if __name__ == "__main__":
    main()
