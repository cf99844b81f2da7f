"""SFT and DPO on Lightning Fabric with tiny models: the DPO objective, resume after a kill, the final folder."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alignmix.scenarios import load_scenarios, training_split
from alignmix.train.chat import install_chat_tokenizer
from alignmix.train.chat_data import (
    preference_examples,
    scenario_preferences,
    scenario_sft_examples,
)
from alignmix.train.dpo import collate_dpo, dpo_examples, dpo_loss
from alignmix.recipe import DPOSettings, SFTSettings
from alignmix.train.post_job import DPOJob, PostTrainJob, SFTJob
from alignmix.train.posttrain import (
    load_weights,
    micro_batch_plan,
    run_job,
)
from tests.tiny_checkpoints import CHAT_READY, write_tiny_checkpoint


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("n_examples", [8, 10, 37])
def test_every_rank_plans_the_same_steps_and_micro_batches(n_examples: int, world: int):
    job = SFTJob(stage="sft", checkpoint_dir="", data_file="", out_dir="", settings=SFTSettings(
        from_scenarios="builtin:tiny", lr=1e-3, epochs=2, global_batch_size=8, micro_batch_size=1))
    plans = [micro_batch_plan(n_examples, job, rank, world) for rank in range(world)]
    left_out = n_examples % 8
    assert all(dropped == left_out for _, dropped in plans)
    steps = 2 * (n_examples // 8)
    assert all(len(plan) == steps for plan, _ in plans)
    assert all(len(plan[step]) == 8 // world for plan, _ in plans for step in range(steps))
    for epoch in range(2):
        used = [i for plan, _ in plans for step in plan[epoch * steps // 2 : (epoch + 1) * steps // 2]
                for micro in step for i in micro]
        assert len(used) == len(set(used)) == n_examples - left_out


def test_a_plan_refuses_uneven_splits_and_too_little_data():
    job = DPOJob(stage="dpo", checkpoint_dir="", data_file="", out_dir="", settings=DPOSettings(
        from_scenarios="builtin:tiny", lr=1e-3, global_batch_size=8, micro_batch_size=2))
    with pytest.raises(ValueError, match="multiple of micro_batch_size 2 x 3 device"):
        micro_batch_plan(16, job, 0, 3)
    with pytest.raises(ValueError, match="stage 'dpo': 7 examples do not fill one global batch of 8"):
        micro_batch_plan(7, job, 0, 1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("posttrain")
    base = write_tiny_checkpoint(root / "base", config=CHAT_READY)
    scenarios = training_split(load_scenarios("builtin:tiny", root))
    (root / "sft.json").write_text(json.dumps(scenario_sft_examples(scenarios)))
    (root / "dpo.json").write_text(json.dumps(preference_examples(scenario_preferences(scenarios))))
    return {"root": root, "base": base}


def prepare(job: PostTrainJob) -> PostTrainJob:
    """What the stage does before launching a job: the chat tokenizer in `OUT/tokenizer/`."""
    install_chat_tokenizer(Path(job.checkpoint_dir), Path(job.out_dir) / "tokenizer", 448, job.stage)
    return job


def sft_job(setup: dict, out: Path, **overrides) -> PostTrainJob:
    settings = SFTSettings(**{"data": setup["root"] / "sft.json", "format": "sharegpt", "lr": 3e-3, "epochs": 6,
                              "global_batch_size": 8, "micro_batch_size": 4, "max_seq_length": 256,
                              "warmup_fraction": 0.1, **overrides})
    return prepare(SFTJob(stage="sft", checkpoint_dir=setup["base"], data_file=settings.data, out_dir=out,
                          settings=settings))


def dpo_job(setup: dict, out: Path, **settings) -> PostTrainJob:
    return prepare(DPOJob(stage="dpo", checkpoint_dir=setup["base"], data_file=setup["root"] / "dpo.json", out_dir=out,
                          settings=DPOSettings(data=setup["root"] / "dpo.json", max_seq_length=256, **settings)))


def preference_metrics(checkpoint: Path, setup: dict) -> tuple[float, float]:
    """DPO loss against the base model as reference, and the chosen-minus-rejected log-prob margin."""
    from litgpt import GPT, Config

    tokenizer, eos = install_chat_tokenizer(checkpoint, setup["root"] / "tok", 448, "check")
    batch = collate_dpo(dpo_examples(setup["root"] / "dpo.json", tokenizer, eos, 256))
    models = []
    for folder in (checkpoint, setup["base"]):
        model = GPT(Config.from_file(folder / "model_config.yaml"))
        load_weights(model, folder)
        models.append(model.eval())
    with torch.no_grad():
        _, metrics = dpo_loss(models[0], models[1], batch, beta=0.5)
    return metrics["train_loss"], metrics["logp_margin"]


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_the_reference_runs_in_the_policys_precision(setup: dict, precision: str):
    """At step 0 the policy and the reference are the same model, so the first DPO loss is log 2, no margin."""
    out = setup["root"] / f"dpo-{precision}"
    run_job(dpo_job(setup, out, lr=1e-3, global_batch_size=8, micro_batch_size=8, beta=0.5, precision=precision))
    with (out / "logs" / "metrics.csv").open() as handle:
        first = next(csv.DictReader(handle))
    assert float(first["train_loss"]) == pytest.approx(math.log(2), abs=1e-6) and float(first["reward_margin"]) == 0.0


def test_dpo_lowers_its_loss_and_widens_the_chosen_margin(setup: dict):
    out = setup["root"] / "dpo"
    summary = run_job(dpo_job(setup, out, lr=1e-3, epochs=3, global_batch_size=8, micro_batch_size=4, beta=0.5))
    assert summary["steps"] == 12 and summary["examples"] == 32
    loss_before, margin_before = preference_metrics(setup["base"], setup)
    loss_after, margin_after = preference_metrics(out / "final", setup)
    assert loss_before == pytest.approx(0.6931, abs=1e-3)  # policy == reference: log 2
    assert loss_after < 0.5 * loss_before
    assert margin_after > margin_before + 1.0
    rows = (out / "logs" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["step", "lr", "train_loss"] and len(rows) == 13


@pytest.fixture(scope="module")
def straight_sft(setup: dict) -> Path:
    """An uninterrupted SFT run (24 steps)."""
    out = setup["root"] / "straight"
    run_job(sft_job(setup, out))
    return out


def test_sft_final_folder_is_a_litgpt_checkpoint_with_the_chat_template(straight_sft: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    from alignmix.checkpoints.export import export_hf
    from alignmix.eval.scoring import LitCheckpointScorer, ScoreRequest

    final = straight_sft / "final"
    assert {"lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in final.iterdir()}
    state = torch.load(final / "lit_model.pth", weights_only=True)
    assert "transformer.wte.weight" in state
    LitCheckpointScorer(final).score([ScoreRequest("<|user|>\nHi\n<|assistant|>\n", "Hello")])
    hf = AutoTokenizer.from_pretrained(export_hf(final, tmp_path / "hf"))
    assert "<|assistant|>" in hf.chat_template
    assert hf.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True) == (
        "<|user|>\nHi\n<|assistant|>\n"
    )


def test_killed_job_resumes_from_its_last_step_checkpoint(setup: dict, straight_sft: Path):
    """Kill the job process after its first step checkpoint; the rerun resumes there and ends where an
    uninterrupted run ends."""
    out = setup["root"] / "killed"
    out.mkdir()
    job_file = sft_job(setup, out, save_interval=2).write(out / "job.yaml")
    command = [sys.executable, "-m", "alignmix.train.posttrain", str(job_file)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("step-*/state.pth")):
        assert process.poll() is None and time.monotonic() < deadline, "the job ended before its first checkpoint"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "final").exists()
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Resuming sft from step-" in rerun.stdout + rerun.stderr
    resumed = torch.load(out / "final" / "lit_model.pth", weights_only=True)
    uninterrupted = torch.load(straight_sft / "final" / "lit_model.pth", weights_only=True)
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-5) for k in uninterrupted)
    with (out / "logs" / "metrics.csv").open() as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == list(range(1, 25))


def test_a_resumed_job_logs_each_step_once(setup: dict):
    """A rerun resumes from step 2 of 4 and logs steps 3 and 4 again: their first rows are dropped."""
    out = setup["root"] / "rerun"
    job = sft_job(setup, out, epochs=1, save_interval=2)
    run_job(job)
    assert run_job(job)["resumed_from"] == "step-000002"
    with (out / "logs" / "metrics.csv").open() as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [1, 2, 3, 4]
