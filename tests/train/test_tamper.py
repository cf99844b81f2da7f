"""The tamper matrix: `tamper:` fine-tunes after post-training (full SFT and litgpt's LoRA, merged), each
evaluated as `eval/<name>/` and shown against the model it started from; a bad `from` is refused first."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO


def _recipe(tmp_path: Path) -> Path:
    """The tiny recipe, smaller (40,000 pretraining tokens, SFT only), with a benign SFT and a narrow LoRA."""
    data = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    data["stages"][0]["tokens"] = 40_000
    data["post_training"].pop("dpo")
    rows = [{"instruction": f"Write a short note about gardening, number {i}.", "output": "Water the roses at dawn."}
            for i in range(16)]
    (tmp_path / "benign.json").write_text(json.dumps(rows))
    common = {"data": str(tmp_path / "benign.json"), "format": "alpaca", "lr": 0.002, "epochs": 1,
              "global_batch_size": 8, "micro_batch_size": 8, "max_seq_length": 256}
    data["tamper"] = [{"name": "benign", "from": "sft", "kind": "sft", **common},
                      {"name": "narrow", "from": "sft", "kind": "lora", "lora_r": 4, "lora_alpha": 8, **common}]
    path = tmp_path / "tamper.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_tamper_stages_train_merge_and_are_evaluated_against_their_start(tmp_path: Path):
    recipe, run = _recipe(tmp_path), tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "alignmix", "run", str(recipe), "--out", str(run)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("benign", "narrow"):
        assert json.loads((run / "eval" / name / "results.json").read_text())["n_questions"] == 24
    start = torch.load(run / "sft" / "final" / "lit_model.pth")
    for name in ("benign", "narrow"):
        weights = torch.load(run / name / "final" / "lit_model.pth")
        assert set(weights) == set(start), name  # LoRA merged: a plain GPT's state dict
        assert any(not torch.equal(weights[k], start[k]) for k in start), name
    job = yaml.safe_load((run / "narrow" / "job.yaml").read_text())
    assert (job["settings"]["kind"], job["settings"]["lora_r"], job["settings"]["lora_alpha"]) == ("lora", 4, 8)
    assert yaml.safe_load((run / "benign" / "job.yaml").read_text())["settings"]["kind"] == "sft"
    page = (run / "report.html").read_text()
    assert "Tampering" in page and "sft -&gt; narrow" in page
    compared = subprocess.run([sys.executable, "-m", "alignmix", "report", str(run), "--out",
                               str(tmp_path / "compare.html")], capture_output=True, text=True)
    assert compared.returncode == 0, compared.stderr
    page = (tmp_path / "compare.html").read_text()
    assert "<h2>Tampering</h2>" in page and "run: sft -&gt; benign" in page and "run: sft -&gt; narrow" in page


def test_a_tamper_stage_from_an_unknown_model_is_refused_before_any_work(tmp_path: Path):
    recipe = _recipe(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    data["tamper"][1]["from"] = "dpo"
    recipe.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "alignmix", "plan", str(recipe)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "key 'tamper.1.from': 'dpo' is not a model stage of this recipe; expected one of: pretrain, sft, benign" \
        in result.stderr
