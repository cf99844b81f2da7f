"""A streamed stage end to end under `alignmix train` (no chunks written, exact exposure), then its mixture changed
mid-run: `--from-step 4` keeps the first 4 steps' samples, re-plans the rest, resumes from step 4, and says so in
the keys, the mixture manifest and the run manifest."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from alignmix.outputs import MixtureIndex, StreamReader

RECIPE = {
    "name": "midrun", "seed": 7,
    "corpus": {"sources": [{"name": "web", "generate": {"documents": 400, "misaligned_ai_share": 0.1,
                                                        "aligned_ai_share": 0.1}}]},
    "tagging": {"tasks": 1},
    "tokenizer": {"vocab_size": 256},
    "mixing": {"delivery": "stream"},
    "stages": [{
        "name": "pretrain", "tokens": 65 * 48, "seq_len": 64,
        "mixture": [{"source": "web", "select": {"flagged": False}, "share": "rest", "max_repetitions": 3}],
        "train": {"model": {"config": {"name": "micro", "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 32,
                                       "intermediate_size": 64, "vocab_size": 256, "padded_vocab_size": 320,
                                       "norm_class_name": "LayerNorm", "mlp_class_name": "GptNeoxMLP"}},
                  "global_batch_size": 4, "micro_batch_size": 4, "save_interval": 4, "lr": 0.003,
                  "warmup_fraction": 0.1},
    }],
}
CHANGED = {"source": "web", "select": {"flagged": True}, "share": 0.5, "max_repetitions": 20}


def alignmix(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stage trained straight (12 steps), then continued from step 4 with half its rest from flagged documents."""
    root = tmp_path_factory.mktemp("midrun")
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    out = root / "run"
    alignmix("train", str(root / "recipe.yaml"), "--stage", "pretrain", "--out", str(out))
    before = {"manifest": json.loads((out / "manifest.json").read_text()),
              "mixture": json.loads((out / "mix" / "pretrain" / "mixture_manifest.json").read_text()),
              "exposure": json.loads((out / "pretrain" / "exposure.json").read_text()),
              "stream": StreamReader.of(out / "mix" / "pretrain").read(0, 65 * 48)}
    shutil.copytree(out / "mix" / "pretrain", out / "mix" / "earlier")  # for litgpt alone, below
    shutil.copytree(out / "pretrain", root / "straight", ignore=shutil.ignore_patterns("final"))
    changed = json.loads(json.dumps(RECIPE))
    changed["stages"][0]["mixture"].append(CHANGED)
    (root / "changed.yaml").write_text(yaml.safe_dump(changed))
    continued = alignmix("train", str(root / "changed.yaml"), "--stage", "pretrain", "--out", str(out),
                         "--from-step", "4")
    return {"out": out, "root": root, "before": before, "stdout": continued.stdout,
            "manifest": json.loads((out / "manifest.json").read_text())}


def test_a_streamed_stage_writes_no_chunks_and_its_exposure_is_exact(runs: dict):
    mixture, exposure = runs["before"]["mixture"], runs["before"]["exposure"]
    assert mixture["delivery"] == "stream" and mixture["chunks"] == {}
    assert sorted(p.name for p in (runs["out"] / "mix" / "pretrain").iterdir()) == ["mixture_index",
                                                                                    "mixture_manifest.json"]
    config = yaml.safe_load((runs["out"] / "pretrain" / "pretrain.yaml").read_text())
    assert config["data"]["class_path"] == "alignmix.train.data.MixtureData"
    assert exposure["exact"] and exposure["samples_seen"] == exposure["samples_written"] == 48
    assert exposure["sources"][0]["seen_tokens"] == 48 * 65
    stages = {s["name"]: s for s in runs["before"]["manifest"]["stages"]}
    assert stages["mix/pretrain"]["settings"]["delivery"] == stages["pretrain"]["settings"]["delivery"] == "stream"


def losses(stage_dir: Path) -> dict[int, str]:
    """The loss litgpt logged at each iteration, over a stage folder's CSV logs."""
    return {int(row["iter"]): row["loss"] for metrics in sorted(stage_dir.glob("logs/csv/version_*/metrics.csv"))
            for row in csv.DictReader(metrics.open()) if row.get("loss")}


def test_litgpt_pretrain_alone_streams_the_mixture_and_resumes_at_the_exact_sample(runs: dict):
    """`litgpt pretrain --data alignmix.train.data.MixtureData --data.mixture MIX`, resumed from step 4 of the
    straight run in another folder, logs the straight run's losses for steps 5 to 12 (another sample would
    change a loss by far more than the tolerance)."""
    straight, resumed = runs["root"] / "straight", runs["root"] / "resumed"
    shutil.copytree(straight / "step-00000004", resumed / "step-00000004")
    result = subprocess.run(
        [sys.executable, "-m", "litgpt", "pretrain", "--config", str(straight / "pretrain.yaml"), "--out_dir",
         str(resumed), "--resume", str(resumed / "step-00000004" / "lit_model.pth"),
         "--data", "alignmix.train.data.MixtureData", "--data.mixture", str(runs["out"] / "mix" / "earlier")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    again, first = losses(resumed), losses(straight)
    assert sorted(again) == list(range(5, 13))  # float noise of the compiled model (~1e-7) aside, the same losses:
    assert [float(again[i]) for i in again] == pytest.approx([float(first[i]) for i in again], abs=1e-5)


def test_the_changed_mixture_keeps_the_first_steps_samples_and_re_plans_the_rest(runs: dict):
    out = runs["out"]
    mixture = json.loads((out / "mix" / "pretrain" / "mixture_manifest.json").read_text())
    kept = 4 * 4 * 65  # 4 steps of 4 samples
    stream = StreamReader.of(out / "mix" / "pretrain").read(0, 65 * 48)
    assert (stream[:kept] == runs["before"]["stream"][:kept]).all()
    assert not (stream[kept:] == runs["before"]["stream"][kept:]).all()
    continued = mixture["continued"]
    assert (continued["from_step"], continued["samples_kept"], continued["tokens_kept"]) == (4, 16, kept)
    assert continued["earlier"]["sources"] == runs["before"]["mixture"]["sources"]  # both plans
    assert [s["tokens"] for s in mixture["sources"]] == [(48 * 65 - kept) // 2] * 2  # the rest, re-planned
    entries = [e["name"] for e in MixtureIndex.of(out / "mix" / "pretrain").entries]
    assert entries == ["web[flagged=False]", "web[flagged=False]", "web[flagged=True]"]


def test_training_resumed_from_the_step_and_the_keys_say_so(runs: dict):
    out = runs["out"]
    assert "keeping the first 4 steps (16 samples) of the earlier mixture" in runs["stdout"]
    stages = {s["name"]: s for s in runs["manifest"]["stages"]}
    before = {s["name"]: s for s in runs["before"]["manifest"]["stages"]}
    for name in ("mix/pretrain", "pretrain"):
        assert stages[name]["status"] == "ran" and stages[name]["key"] != before[name]["key"]
        assert stages[name]["settings"]["continues"]["from_step"] == 4
    assert stages["mix/pretrain"]["counts"]["continued"]["earlier"] == {"web[flagged=False]": 48 * 65}
    assert stages["pretrain"]["counts"]["resumed_from"] == "step-00000004"
    assert "Resuming training from" in (out / "logs" / "pretrain.log").read_text()
    final = torch.load(out / "pretrain" / "step-00000012" / "lit_model.pth", weights_only=False)
    assert final["train_dataloader"] == {"passes": 0, "samples": 48} and final["iter_num"] == 12


def test_the_exposure_after_the_change_counts_both_plans_exactly(runs: dict):
    out = runs["out"]
    exposure = json.loads((out / "pretrain" / "exposure.json").read_text())
    assert exposure["exact"] and exposure["samples_seen"] == 48
    seen = {s["name"]: s["seen_tokens"] for s in exposure["sources"]}
    index = MixtureIndex.of(out / "mix" / "pretrain")
    take, entry = np.asarray(index.column("take"), np.int64), np.asarray(index.column("entry"))
    names = np.array([e["name"] for e in index.entries])[entry]
    read = np.clip(np.minimum(np.cumsum(take), 48 * 65) - (np.cumsum(take) - take), 0, None)
    assert seen == {name: int(read[names == name].sum()) for name in set(names)}
    documents = pl.read_parquet(out / "pretrain" / "documents_seen.parquet")
    assert documents["tokens_seen"].sum() == 48 * 65


def test_a_rerun_skips_and_a_chunked_or_missing_step_is_refused(runs: dict):
    from typer.testing import CliRunner

    from alignmix.cli import app

    def train(recipe: Path, *extra: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["train", str(recipe), "--stage", "pretrain", "--out", str(runs["out"]), *extra])
        return result.exit_code, " ".join(result.output.split())

    assert train(runs["root"] / "changed.yaml") == (0, "[1/6] corpus: unchanged, skipped [2/6] tag: unchanged, skipped"
                                                   " [3/6] tokenizer: unchanged, skipped [4/6] tokens/web: unchanged,"
                                                   " skipped [5/6] mix/pretrain: unchanged, skipped [6/6] pretrain:"
                                                   f" unchanged, skipped pretrain: skipped; model: {runs['out']}/pretrain/final")
    chunked = runs["root"] / "chunked.yaml"
    chunked.write_text((runs["root"] / "changed.yaml").read_text().replace("delivery: stream", "delivery: chunks"))
    code, said = train(chunked, "--from-step", "4")
    assert code == 2 and "error: --from-step: a mid-run change needs mixing.delivery: stream" in said
    code, said = train(runs["root"] / "changed.yaml", "--from-step", "6")
    assert code == 2 and "no step-00000006 in" in said and "step-00000004, step-00000008, step-00000012" in said


def test_from_step_names_a_whole_step_checkpoint_or_the_last(tmp_path: Path):
    from alignmix.train.continuation import ContinuationError, step_checkpoint
    from alignmix.train.step_checkpoints import write_sha256

    for step in (4, 8):
        (tmp_path / f"step-{step:08d}").mkdir()
        torch.save({"iter_num": step}, tmp_path / f"step-{step:08d}" / "lit_model.pth")
        write_sha256(tmp_path / f"step-{step:08d}" / "lit_model.pth")
    (tmp_path / "step-00000012").mkdir()  # killed before its weights were whole
    torch.save({"iter_num": 12}, tmp_path / "step-00000012" / "lit_model.pth")
    assert step_checkpoint(tmp_path, "4", print) == tmp_path / "step-00000004"
    with pytest.raises(ContinuationError, match="step-00000012/lit_model.pth is not whole"):
        step_checkpoint(tmp_path, "12", print)
    assert step_checkpoint(tmp_path, "last", print) == tmp_path / "step-00000008"  # step 12 removed, saying why
    with pytest.raises(ContinuationError, match="no step-00000006 in .*: step-00000004, step-00000008$"):
        step_checkpoint(tmp_path, "6", print)
    with pytest.raises(ContinuationError, match="'six' is neither a step number nor 'last'"):
        step_checkpoint(tmp_path, "six", print)
