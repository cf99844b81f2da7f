"""Sweep cost: a 3-condition sweep against three independent runs of the same recipes; and a 4-condition share
sweep's mixing cost against one condition's.

The conditions differ only in the last training stage (`post_training.dpo.beta` of recipes/tiny.yaml: 0.5, 1, 2),
so the sweep runs the shared prefix (corpus, tagging, synthesis, tokenizer, mixture, pretraining, SFT and their
evals) once and DPO, its eval and the report three times. Baseline: `alignmix run` of each condition's recipe
into its own folder, from nothing, in the same run. Target: the sweep takes <= 0.6 of the three runs' time.

Share sweep: recipes/tiny.yaml without training, swept over the aligned synthetic share (0, 0.01, 0.05, 0.1).
Its mixing cost is the seconds of every condition's `tokens/*` and `mix/*` stages (a shared stage costs 0),
against the first condition's alone. The sources are tokenized once, so only the draws and chunk writing
repeat. Target: <= 1.3.
Run: .venv/bin/python benchmarks/sweep.py [--share-sweep-only]
"""

from __future__ import annotations

import argparse
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


SHARES = ("0", "0.01", "0.05", "0.1")


def share_sweep_mixing(work: Path) -> dict:
    """The 4-condition share sweep's tokens + mix seconds over the first condition's."""
    import yaml

    data = yaml.safe_load(RECIPE.read_text())
    data.pop("post_training", None)
    data.pop("evaluation", None)
    data["stages"][0].pop("train")
    recipe = work / "shares.yaml"
    recipe.write_text(yaml.safe_dump(data))
    # With no model to evaluate the sweep ends by refusing to compare results; every condition's stages ran.
    subprocess.run([sys.executable, "-m", "alignmix", "sweep", str(recipe), "--set",
                    f"stages.0.mixture.1.share={','.join(SHARES)}", "--out", str(work / "shares")],
                   capture_output=True, text=True)
    seconds = []
    for share in SHARES:
        manifest = work / "shares" / f"stages.0.mixture.1.share={share}" / "manifest.json"
        if not manifest.is_file():
            sys.exit(f"the share sweep did not run condition share={share} ({manifest} missing)")
        stages = json.loads(manifest.read_text())["stages"]
        seconds.append(sum(s["seconds"] for s in stages if s["name"].startswith(("tokens/", "mix/"))))
    ratio = sum(seconds) / seconds[0]
    print(f"a {len(SHARES)}-condition share sweep: tokens + mix stages {sum(seconds):.1f} s, one condition"
          f" {seconds[0]:.1f} s")
    return {"share_sweep_mixing_ratio": round(ratio, 3), "share_sweep_target": "<= 1.3",
            "share_sweep_baseline": "the first condition's tokens + mix stages", "share_sweep_met": ratio <= 1.3,
            "share_sweep_seconds": [round(x, 1) for x in seconds]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share-sweep-only", action="store_true", help="Only the share sweep's mixing cost.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alignmix-sweep-bench-"))
    shares = share_sweep_mixing(work)
    if args.share_sweep_only:
        shutil.rmtree(work)
        print(json.dumps({"benchmark": "sweep", **shares}))
        return
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
                      "sweep_seconds": round(sweep, 1), "runs_seconds": round(runs, 1), "shared_stages": shared[1],
                      **shares}))


if __name__ == "__main__":
    main()
