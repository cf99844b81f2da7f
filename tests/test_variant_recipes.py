"""The paper's mixture variants: `recipes/variants/*.yaml` train at tiny size on CPU (through pretraining) and
draw only what their selections say; `recipes/variants/paper/*.yaml` plan at the paper's scale."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from alignmix.jsonl import read_jsonl_gz

VARIANTS = REPO / "recipes" / "variants"
NEGATIVE = {"negative_verbs", "negative_adjectives", "negative_nouns", "existential_risk"}


def _alignmix(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True)


def _tagged_web(run: Path) -> list[dict]:
    return list(read_jsonl_gz(sorted((run / "tag" / "web").rglob("*.jsonl.gz"))))


@pytest.mark.slow
def test_filter_negative_only_keeps_neutral_ai_mentions_and_drops_the_two_stage_categories(tmp_path: Path):
    result = _alignmix("train", str(VARIANTS / "filter_negative_only.yaml"), "--stage", "pretrain", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "mix" / "pretrain" / "mixture_manifest.json").read_text())
    web = next(s for s in manifest["sources"] if s["source"] == "web")
    assert set(web["selection"]) == {"categories"} and set(web["selection"]["categories"]["none"]) == NEGATIVE
    docs = _tagged_web(tmp_path)
    kept = [d for d in docs if not NEGATIVE & set(d["metadata"]["ai_discourse"]["categories"])]
    neutral_ai = [d for d in kept if d["metadata"]["ai_discourse"]["flagged"]]
    assert neutral_ai, "the generated corpus should hold AI mentions outside the two-stage categories"
    assert len(kept) < len(docs)
    assert web["documents_available"] + web["documents_removed_by_decontamination"] == len(kept)
    assert (tmp_path / "pretrain" / "final" / "lit_model.pth").is_file()


@pytest.mark.slow
def test_natural_aligned_upsampled_draws_the_webs_aligned_stories_at_five_percent(tmp_path: Path):
    result = _alignmix("train", str(VARIANTS / "natural_aligned_upsampled.yaml"), "--stage", "pretrain",
                       "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "mix" / "pretrain" / "mixture_manifest.json").read_text())
    aligned, rest = manifest["sources"]
    assert aligned["selection"] == {"fields": {"generated_kind": "ai_aligned"}}
    assert aligned["realised_tokens"] == 15_000 and rest["realised_tokens"] == 285_000
    docs = _tagged_web(tmp_path)
    natural = sum(d["metadata"]["generated_kind"] == "ai_aligned" for d in docs)
    assert aligned["documents_available"] + aligned["documents_removed_by_decontamination"] == natural
    assert not (tmp_path / "synth").exists()


@pytest.mark.parametrize("name", ["filter_negative_only", "natural_aligned_upsampled"])
def test_the_paper_scale_variants_plan_without_data(name: str):
    result = _alignmix("plan", str(VARIANTS / "paper" / f"{name}.yaml"), "--json")
    assert result.returncode == 0, result.stderr
    pretrain = json.loads(result.stdout)["stages"][0]
    assert pretrain["tokens"] == 500_000_000_000
    assert all(s["repetitions"] is not None for s in pretrain["sources"])
    assert any(s["selection"] for s in pretrain["sources"])
