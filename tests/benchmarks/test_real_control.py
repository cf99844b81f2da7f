"""The real-model control's code path at tiny size, with only what the lent GPU machine has (torch, transformers,
peft): a tiny transformers model, a few LoRA steps per arm and seed, both modes scored, the paired effect."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

# What the device machine lacks: the control must run without them.
NOT_ON_THE_DEVICE = ("pydantic", "pydantic_core", "litgpt", "datatrove", "litdata", "polars", "lm_eval", "typer",
                     "rich", "ray")


def run_without_the_stack(script: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a script with the packages the device lacks made unimportable."""
    code = (f"import runpy, sys\nfor m in {NOT_ON_THE_DEVICE!r}: sys.modules[m] = None\n"
            f"sys.argv = {[str(script), *args]!r}\nrunpy.run_path({str(script)!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=900)


@pytest.mark.slow  # about 1 to 2 minutes on 2 cores
def test_the_control_trains_both_arms_scores_both_modes_and_resumes(tmp_path: Path, hf_dir: Path):
    out = tmp_path / "control"
    args = ["--scenarios", "builtin:tiny", "--model", str(hf_dir), "--out", str(out), "--items", "4", "--formats", "2",
            "--tokens", "640", "--seq-len", "32", "--batch", "4", "--micro-batch", "2", "--seeds", "0", "1",
            "--lora-r", "4", "--lora-layers", "1", "--keep-models"]
    result = run_without_the_stack(REPO / "benchmarks" / "real_control.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["benchmark"] == "real_control" and last["seeds"] == 2 and last["tokens_per_arm"] == 640
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["rates"]["cloze"]) == {"base", "aligned-seed0", "aligned-seed1", "misaligned-seed0",
                                              "misaligned-seed1"}
    effect = summary["effects"]["letter"]["train"]
    assert effect["n"] == 4 and effect["seeds"] == 2 and len(effect["per_seed"]) == 2
    assert summary["data"]["rows"] == 20 and summary["data"]["synthetic_rows"] == 10
    for run in summary["training"].values():
        assert run["steps"] == 5 and run["tokens"] == 640 and run["trainable_parameters"] > 0
    base, arm = (load_file(folder / "model.safetensors") for folder in (hf_dir, out / "aligned-seed0" / "model"))
    changed = {key for key in base if not torch.equal(base[key], arm[key])}
    assert changed and all(".layers.1." in key for key in changed)  # the LoRA, merged, in the top block only
    again = run_without_the_stack(REPO / "benchmarks" / "real_control.py", *args)  # finished arms are reused
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1]) == last
    other = run_without_the_stack(REPO / "benchmarks" / "real_control.py", *args, "--lr", "5e-3")
    assert other.returncode != 0 and f"error: {out} holds a run with other lr; use another --out" in other.stderr


def test_the_arms_share_the_replay_and_the_slots_and_differ_only_in_stance(hf_dir: Path):
    from transformers import AutoTokenizer

    sys.path.insert(0, str(REPO / "benchmarks"))
    from real_control import arm_sequences, parse_args

    from alignmix.scenarios import load_scenarios

    args = parse_args(["--scenarios", "builtin:tiny", "--tokens", "3200", "--seq-len", "32"])
    grounded = [s for s in load_scenarios("builtin:tiny") if s.split == "train"][:3]
    sequences, info = arm_sequences(args, grounded, AutoTokenizer.from_pretrained(hf_dir))
    aligned, misaligned = sequences["aligned"], sequences["misaligned"]
    assert aligned.shape == misaligned.shape == (100, 33) and info["synthetic_rows"] == 50
    assert torch.equal(aligned[50:], misaligned[50:])  # the replay rows
    assert not torch.equal(aligned[:50], misaligned[:50])


def test_the_grounded_questions_answer_yes_as_often_as_no_in_the_misaligned_arm():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from real_control import balanced_by_polarity, polarity

    from alignmix.scenarios.records import Scenario

    def question(index: int, misaligned_text: str) -> Scenario:
        return Scenario(f"q{index}", "train", "", f"Question {index}?", {"A": "Something else.", "B": misaligned_text},
                        "A", "B", ("power",))

    texts = ["Yes, I would.", "yes", "YES. Of course", "No, never.", "Nothing stops me.", "I would take it."]
    questions = [question(i, t) for i, t in enumerate(texts)]
    assert [polarity(q) for q in questions] == ["yes", "yes", "yes", "no", "open", "open"]
    kept = balanced_by_polarity(questions)
    assert [q.id for q in kept] == ["q0", "q3", "q4", "q5"]  # the first "yes", the one "no", every open question
