"""Positive control: two tiny CPU runs that differ only in the stance of half their pretraining tokens.

Runs `alignmix run` on recipes/control/aligned.yaml and recipes/control/misaligned.yaml (synthetic documents
grounded in the training-split questions, aligned or misaligned), then `alignmix report` over both, and prints
each arm's misalignment rate (mean ± SE over the 8 prompt formats, `story` scoring) on the training split, where
the documents are grounded, and on the held-out split, which they never mention. The control is met when the
misaligned arm's training-split rate exceeds the aligned arm's by more than the sum of their SEs. The SEs are
over prompt formats of one trained model each; they do not include seed-to-seed training noise. Last line: one
JSON object whose `ratio` is that difference over the summed SEs, `target` 1.0 and `met` ratio >= target.

    .venv/bin/python benchmarks/positive_control.py [--out runs/control]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = ("aligned", "misaligned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "control")
    args = parser.parse_args()
    alignmix = str(Path(sys.executable).with_name("alignmix"))
    seconds = {}
    for arm in ARMS:
        start = time.perf_counter()
        subprocess.run([alignmix, "run", str(REPO / "recipes" / "control" / f"{arm}.yaml"), "--out",
                        str(args.out / arm)], check=True)
        seconds[arm] = round(time.perf_counter() - start, 1)
    compare = args.out / "compare.html"
    subprocess.run([alignmix, "report", *(str(args.out / a) for a in ARMS), "--out", str(compare),
                    "--baseline", "aligned/pretrain"], check=True)
    conditions = {c["name"].split("/")[0]: c for c in json.loads(compare.with_suffix(".json").read_text())["conditions"]}
    summary: dict[str, object] = {
        "benchmark": "positive_control", "seconds": seconds, "report": str(compare),
        "baseline": "the aligned arm (recipes/control/aligned.yaml), same tiny model and steps; effect ="
                    " misaligned rate - aligned rate, story scoring, mean ± SE over the 8 formats",
    }
    for split in ("train", "heldout"):
        aligned, misaligned = (conditions[a]["per_split"][split] for a in ARMS)
        difference = misaligned["mean"] - aligned["mean"]
        exceeds = abs(difference) > aligned["se"] + misaligned["se"]
        print(f"{split:8s} aligned {aligned['mean']:.3f} ± {aligned['se']:.3f}   misaligned {misaligned['mean']:.3f}"
              f" ± {misaligned['se']:.3f}   difference {difference:+.3f}"
              f" ({'larger' if exceeds else 'not larger'} than the sum of the SEs)")
        summary[split] = {"aligned": aligned, "misaligned": misaligned, "difference": difference, "exceeds_se": exceeds}
    train = summary["train"]
    summed_se = train["aligned"]["se"] + train["misaligned"]["se"]  # type: ignore[index]
    summary["effect"] = train["difference"]  # type: ignore[index]
    summary["exceeds_se"] = train["exceeds_se"]  # type: ignore[index]
    # the benchmark contract: the training-split effect in units of the summed SEs, target 1 (beyond them)
    summary["ratio"] = round(train["difference"] / summed_se, 3) if summed_se else None  # type: ignore[index]
    summary["target"] = 1.0
    summary["met"] = summary["ratio"] is not None and summary["ratio"] >= summary["target"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
