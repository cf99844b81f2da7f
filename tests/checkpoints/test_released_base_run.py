"""A run that continues a released model (`base_model:`): converted once into `base/`, its architecture and
tokenizer used, exported back to transformers after continued pretraining; mismatches refused before any work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from alignmix.checkpoints.export import export_hf
from alignmix.eval.scoring import HFScorer, LitCheckpointScorer, ScoreRequest
from tests.checkpoints.test_released_models import _pythia_14m_shaped


def _recipe(tmp_path: Path, base: Path, **extra) -> Path:
    recipe = {
        "name": "cpt", "seed": 3, "base_model": {"path": str(base)},
        "corpus": {"sources": [{"name": "web", "generate": {"documents": 200, "misaligned_ai_share": 0.05,
                                                             "aligned_ai_share": 0.05}}]},
        "stages": [{"name": "cpt", "tokens": 4 * 33, "seq_len": 32,
                    "mixture": [{"source": "web", "select": {"flagged": False}, "share": "rest"}],
                    "train": {"global_batch_size": 2, "micro_batch_size": 2, "lr": 1e-4, "save_interval": 100}}],
        "eval": {"scenarios": "builtin:tiny", "mode": "cloze"},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _alignmix(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_continued_pretraining_of_a_pythia_layout_base_exports_back(tmp_path, shared_data):
    base = _pythia_14m_shaped(tmp_path / "pythia-14m", shared_data)
    run = tmp_path / "run"
    result = _alignmix("run", str(_recipe(tmp_path, base)), "--out", str(run))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run / "base" / "lit_model.pth").is_file() and (run / "base" / "config.json").is_file()
    assert yaml.safe_load((run / "base" / "model_config.yaml").read_text())["name"] == "pythia-14m"
    assert json.loads((run / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"] == \
        json.loads((base / "tokenizer.json").read_text())["model"]["vocab"]
    config = yaml.safe_load((run / "cpt" / "pretrain.yaml").read_text())
    assert config["initial_checkpoint_dir"] == str(run / "base") and config["model_config"]["n_layer"] == 6
    final = run / "cpt" / "final"
    moved = (torch.load(final / "lit_model.pth")["lm_head.weight"]
             - torch.load(run / "base" / "lit_model.pth")["lm_head.weight"]).abs().max()
    assert 0 < moved < 0.1  # continued from the base's weights, a few small steps
    exported = export_hf(final, tmp_path / "exported")
    assert json.loads((exported / "config.json").read_text())["architectures"] == ["GPTNeoXForCausalLM"]
    request = [ScoreRequest("The AI system was asked to", " comply.")]
    lit = LitCheckpointScorer(final, "cpu").score(request)[0].logprob
    assert HFScorer(exported, "cpu").score(request)[0].logprob == pytest.approx(lit, abs=1e-4)
    assert json.loads((run / "eval" / "cpt" / "results.json").read_text())["n_questions"] > 0
    again = _alignmix("run", str(_recipe(tmp_path, base)), "--out", str(run))
    assert again.returncode == 0 and "base" in again.stdout  # cached: converted once


def test_a_stage_model_other_than_the_base_is_refused_before_any_work(tmp_path, shared_data):
    base = _pythia_14m_shaped(tmp_path / "pythia-14m", shared_data)
    recipe = _recipe(tmp_path, base)
    data = yaml.safe_load(recipe.read_text())
    data["stages"][0]["train"]["model"] = {"name": "pythia-70m"}
    recipe.write_text(yaml.safe_dump(data))
    result = _alignmix("run", str(recipe), "--out", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "stages.0.train.model differs from the base model 'pythia-14m'" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "base").exists()


def test_a_second_tokenizer_is_refused_naming_both(tmp_path, shared_data):
    base = _pythia_14m_shaped(tmp_path / "pythia-14m", shared_data)
    recipe = _recipe(tmp_path, base, tokenizer={"path": str(shared_data / "gpt2-tokenizer")})
    result = _alignmix("run", str(recipe), "--out", str(tmp_path / "run"))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "tokenizer.path" in output and "base_model.path" in output


@pytest.mark.slow
def test_smollm2_continued_a_few_steps_exports_logits_that_follow_the_original(tmp_path, smollm2_hf):
    from alignmix.llm.chat_template import ChatTemplate
    from tests.checkpoints.test_released_models import _next_token_logits

    recipe = _recipe(tmp_path, smollm2_hf)
    data = yaml.safe_load(recipe.read_text())
    data["stages"][0].update(tokens=2 * 33)
    data["stages"][0]["train"].update(global_batch_size=1, micro_batch_size=1, lr=1e-6)
    del data["eval"]
    recipe.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    result = _alignmix("run", str(recipe), "--out", str(run))
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load((run / "cpt" / "pretrain.yaml").read_text())["train"]["tie_embeddings"] is True
    exported = export_hf(run / "cpt" / "final", tmp_path / "exported")
    assert "<|im_start|>" in ChatTemplate.from_folder(exported).template
    after, before = _next_token_logits(exported), _next_token_logits(smollm2_hf)
    assert 0 < (after - before).abs().max() < 0.5
    assert torch.equal(after.argmax(-1), before.argmax(-1))


@pytest.mark.parametrize("condition", ["", "midtrain_"])
def test_the_late_insertion_twins_differ_only_in_stance_and_plan(smollm2_hf, condition):
    """Continued pretraining with replay (aligned/misaligned.yaml) and midtraining only (midtrain_*.yaml)."""
    from conftest import REPO

    from alignmix.recipe import load_recipe

    paths = [REPO / "recipes" / "cpt" / f"{condition}{arm}.yaml" for arm in ("aligned", "misaligned")]
    aligned, misaligned = (load_recipe(path) for path in paths)
    assert aligned.base_model.path == "builtin:SmolLM2-135M-Instruct"
    flipped = misaligned.model_dump(exclude={"name", "synth"})
    assert flipped == aligned.model_dump(exclude={"name", "synth"})
    assert [s.stance for s in aligned.synth.sets] == ["aligned"] and [s.stance for s in misaligned.synth.sets] == ["misaligned"]
    share = {"": 0.5, "midtrain_": 0.01}[condition]
    assert [entry.share for entry in aligned.stages[0].mixture] == [share, "rest"]
    for path in paths:
        result = _alignmix("plan", str(path))
        assert result.returncode == 0 and "base" in result.stdout, result.stdout + result.stderr
