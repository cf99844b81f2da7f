"""The paper's recipes state PAPER.md's figures and plan with no data present."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from alignmix.corpus.plan import assumed_available, plan_stage
from alignmix.recipe import RecipeError, load_recipe

PAPER = REPO / "recipes" / "paper"
RECIPES = sorted(PAPER.glob("*.yaml"))


def plan_of(name: str) -> dict:
    recipe = load_recipe(PAPER / name)
    stages = [plan_stage(stage, assumed_available(recipe, stage)) for stage in recipe.stages]
    return {p.name: {s.name: s for s in p.sources} | {"_stage": p} for p in stages}


def test_all_paper_recipes_exist_and_validate():
    names = {p.name for p in RECIPES}
    assert {
        "unfiltered.yaml", "filtered.yaml", "misalignment_upsampled.yaml", "alignment_upsampled.yaml",
        "filtered_alignment_upsampled.yaml", "alignment_midtrain_only.yaml", "alignment_cpt.yaml",
    } <= names
    for path in RECIPES:
        recipe = load_recipe(path)
        pretrain, midtrain = recipe.stages[0], recipe.stages[1]
        assert (pretrain.tokens, pretrain.seq_len) == (500_000_000_000, 2048)
        assert (midtrain.tokens, midtrain.seq_len) == (50_000_000_000, 16384)
        train = pretrain.train
        assert train.model.name == "pythia-6.9b"
        assert train.global_batch_size * pretrain.seq_len == 4_194_304
        assert midtrain.train.global_batch_size * midtrain.seq_len == 4_194_304
        assert (train.lr, train.min_lr, train.warmup_fraction) == (3e-4, 1.2e-5, 0.01)
        assert (midtrain.train.lr, midtrain.train.min_lr) == (2.25e-4, 0.0)
        assert (train.betas, train.eps, train.weight_decay, train.max_norm) == ((0.9, 0.95), 1e-8, 0.1, 0.5)


def test_filtered_replaces_the_paper_flagged_share():
    plan = plan_of("filtered.yaml")
    dclm = plan["pretrain"]["dclm[flagged=False]"]
    assert dclm.tokens == 500_000_000_000
    assert dclm.available_tokens == round(500_000_000_000 * (1 - 0.093))
    assert dclm.repetitions == pytest.approx(1 / 0.907)
    assert plan["midtrain"]["climbmix[flagged=False]"].repetitions == pytest.approx(1 / (1 - 0.0788))


@pytest.mark.parametrize(
    ("name", "synthetic", "in_pretrain"),
    [
        ("alignment_upsampled.yaml", "synthetic_aligned", True),
        ("misalignment_upsampled.yaml", "synthetic_misaligned", True),
        ("filtered_alignment_upsampled.yaml", "synthetic_aligned", True),
        ("alignment_midtrain_only.yaml", "synthetic_aligned", False),
    ],
)
def test_synthetic_documents_are_one_percent_at_the_right_stage(name: str, synthetic: str, in_pretrain: bool):
    plan = plan_of(name)
    assert (synthetic in plan["pretrain"]) == in_pretrain
    if in_pretrain:
        assert plan["pretrain"][synthetic].tokens == 5_000_000_000
    assert plan["midtrain"][synthetic].tokens == 500_000_000
    assert plan["midtrain"][synthetic].share == pytest.approx(0.01)


def test_continued_pretraining_is_synthetic_plus_replay():
    plan = plan_of("alignment_cpt.yaml")["cpt"]
    assert plan["synthetic_aligned"].tokens == 500_000_000
    assert plan["replay:midtrain"].tokens == 500_000_000
    assert plan["replay:midtrain"].repetitions == pytest.approx(0.01)


def test_plan_json_works_without_data():
    result = subprocess.run(
        [sys.executable, "-m", "alignmix", "plan", str(PAPER / "alignment_upsampled.yaml"), "--json"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    stages = json.loads(result.stdout)["stages"]
    assert [(s["name"], s["tokens"], s["seq_len"]) for s in stages] == [
        ("pretrain", 500_000_000_000, 2048), ("midtrain", 50_000_000_000, 16384),
    ]
    assert set(stages[0]["sources"][0]) == {"name", "tokens", "share", "repetitions", "selection"}


def test_running_a_recipe_with_only_assumed_statistics_is_refused(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "alignmix", "run", str(PAPER / "unfiltered.yaml"), "--out", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert any(reason in result.stderr for reason in (
        "carry only `assumed` statistics", "tokenizer.path", "post_training.sft.data"))


def test_extends_merges_named_lists(tmp_path: Path):
    (tmp_path / "base.yaml").write_text((PAPER / "unfiltered.yaml").read_text().replace(
        "../../../shared/data/gpt-neox-20b-tokenizer/20B_tokenizer.json", "tok.json"))
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nname: child\nstages:\n  - name: midtrain\n    tokens: 100000\n"
        "    mixture:\n      - source: mcqa\n        share: rest\n"
    )
    recipe = load_recipe(tmp_path / "child.yaml")
    assert [s.name for s in recipe.stages] == ["pretrain", "midtrain"]
    assert recipe.stages[1].tokens == 100000 and recipe.stages[1].seq_len == 16384
    assert [e.source for e in recipe.stages[1].mixture] == ["mcqa"]
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\nname: x\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "loop.yaml")
