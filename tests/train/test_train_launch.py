"""Paper recipes produce litgpt configs its own parser accepts, and sbatch scripts that bash accepts."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alignmix.recipe import load_recipe
from alignmix.scenarios import load_scenarios, training_split
from alignmix.train.launch import Launch
from alignmix.train.litgpt_config import StageFiles, TrainConfigError, pretrain_config
from alignmix.train.post_job import read_job

PAPER = REPO / "recipes" / "paper"


def parse_with_litgpt(config_file: Path):
    """What `litgpt pretrain --config FILE` parses (jsonargparse over its `setup` signature), without training."""
    from jsonargparse import ActionConfigFile, ArgumentParser
    from litgpt.pretrain import setup, validate_args

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(setup)
    parsed = parser.instantiate_classes(parser.parse_args(["--config", str(config_file)]))
    validate_args(parsed.train, parsed.eval, parsed.initial_checkpoint_dir, parsed.resume)
    return parsed


@pytest.mark.parametrize("stage_index", [0, 1])
def test_paper_stage_configs_parse_with_litgpt(tmp_path: Path, stage_index: int):
    recipe = load_recipe(PAPER / "alignment_upsampled.yaml")
    stage = recipe.stages[stage_index]
    files = StageFiles(
        data_dir=tmp_path / "mix", tokenizer_dir=tmp_path / "tokenizer", out_dir=tmp_path / stage.name,
        vocab_size=50_277, initial_checkpoint_dir=tmp_path / "pretrain" / "final" if stage_index else None,
    )
    config_file = tmp_path / "pretrain.yaml"
    config_file.write_text(yaml.safe_dump(pretrain_config(stage, files, recipe.seed, resume=None, launch=Launch(nodes=64, gpus_per_node=4))))
    parsed = parse_with_litgpt(config_file)
    assert parsed.model_config.name == "pythia-6.9b" and parsed.model_config.n_layer == 32
    assert parsed.model_config.block_size >= stage.seq_len
    assert parsed.train.global_batch_size * parsed.train.max_seq_length == 4_194_304
    assert (parsed.devices, parsed.num_nodes, parsed.precision) == (4, 64, "bf16-mixed")
    assert parsed.optimizer["init_args"] == {
        "lr": stage.train.lr, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8,
    }
    assert parsed.train.min_lr == (1.2e-5 if stage_index == 0 else 0.0)
    assert type(parsed.data).__name__ == "LitData"
    assert (parsed.initial_checkpoint_dir is not None) == bool(stage_index)  # a later stage starts from the last


def test_resume_replaces_the_initial_checkpoint(tmp_path: Path):
    recipe = load_recipe(PAPER / "unfiltered.yaml")
    files = StageFiles(tmp_path, tmp_path, tmp_path / "midtrain", 50_277, tmp_path / "pretrain" / "final")
    step = tmp_path / "midtrain" / "step-00000010"
    config = pretrain_config(recipe.stages[1], files, 0, resume=step)
    assert config["initial_checkpoint_dir"] is None and config["resume"] == str(step / "lit_model.pth")


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path: Path):
    recipe = load_recipe(PAPER / "unfiltered.yaml")
    files = StageFiles(tmp_path, tmp_path, tmp_path, 60_000, None)
    with pytest.raises(TrainConfigError, match="60,000 tokens but the model 'pythia-6.9b' embeds only 50,432"):
        pretrain_config(recipe.stages[0], files, 0, resume=None)


def test_paper_post_training_settings():
    post = load_recipe(PAPER / "unfiltered.yaml").post_training
    assert (post.sft.lr, post.sft.min_lr, post.sft.epochs, post.sft.max_seq_length) == (8e-5, 0.0, 2, 16384)
    assert (post.dpo.beta, post.dpo.lr, post.dpo.epochs, post.dpo.max_seq_length) == (5.0, 1e-6, 1, 2048)


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_slurm_dry_run_prints_a_valid_sbatch_script(tmp_path: Path, stage: str):
    result = subprocess.run(
        [sys.executable, "-m", "alignmix", "train", str(PAPER / "unfiltered.yaml"), "--stage", stage,
         "--out", str(tmp_path / "run"), "--launcher", "slurm", "--nodes", "64", "--gpus-per-node", "4",
         "--time", "48:00:00", "--set", "seed=7", "--dry-run"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ("#SBATCH --nodes=64", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --time=48:00:00"):
        assert line in script.splitlines()
    assert f"--stage {stage} --set seed=7" in script and "--launcher srun --nodes 64 --gpus-per-node 4" in script
    (tmp_path / "job.sbatch").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")]).returncode == 0
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_train_refuses_an_unknown_stage(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "alignmix", "train", str(REPO / "recipes" / "tiny.yaml"), "--stage", "midtrain",
         "--out", str(tmp_path)], capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "'midtrain' is not a training stage" in result.stderr and "pretrain, sft, dpo" in result.stderr


def test_a_slurm_allocation_sets_the_post_training_job(tmp_path: Path):
    from alignmix.recipe import load_recipe as load
    from alignmix.train.post_stage import post_training_job
    from tests.tiny_checkpoints import CHAT_READY, write_tiny_checkpoint

    base = write_tiny_checkpoint(tmp_path / "base", config=CHAT_READY)
    (tmp_path / "dpo.json").write_text(
        '[{"conversations": [{"from": "human", "value": "Hi"}], "chosen": "Hello", "rejected": "Go away"}]'
    )
    recipe = load(PAPER / "unfiltered.yaml")
    settings = recipe.post_training.dpo.model_copy(update={"data": tmp_path / "dpo.json"})
    job = post_training_job("dpo", settings, base, tmp_path / "dpo", 0, [], Launch(("srun",), nodes=8, gpus_per_node=4))
    assert (job.num_nodes, job.devices, job.settings.beta, job.settings.lr) == (8, 4, 5.0, 1e-6)
    assert job.settings.precision == "bf16-mixed" and job.settings == settings
    assert recipe.post_training.sft.strategy == "fsdp" and job.settings.strategy == "fsdp"
    assert read_job(tmp_path / "dpo" / "job.yaml") == job


def test_a_new_optimization_setting_reaches_the_job(tmp_path: Path, monkeypatch):
    """The job holds the recipe's validated settings whole: a field added to them needs no copy in the stage."""
    from alignmix.recipe import DPOSettings
    from alignmix.train import post_job
    from alignmix.train.post_stage import post_training_job
    from tests.tiny_checkpoints import CHAT_READY, write_tiny_checkpoint

    class Extended(DPOSettings):
        label_smoothing: float = 0.0

    class ExtendedJob(post_job.DPOJob):
        settings: Extended

    monkeypatch.setitem(post_job.JOBS, "dpo", ExtendedJob)
    base = write_tiny_checkpoint(tmp_path / "base", config=CHAT_READY)
    settings = Extended(from_scenarios="builtin:tiny", label_smoothing=0.1)
    scenarios = training_split(load_scenarios("builtin:tiny", tmp_path))
    job = post_training_job("dpo", settings, base, tmp_path / "dpo", 0, scenarios)
    assert read_job(tmp_path / "dpo" / "job.yaml").settings.label_smoothing == 0.1 == job.settings.label_smoothing


def test_fsdp_shards_and_recomputes_litgpt_blocks():
    """Only the strategy object: FSDP itself needs several GPUs."""
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt.model import Block

    from alignmix.train.posttrain import fabric_strategy

    strategy = fabric_strategy("fsdp")
    assert isinstance(strategy, FSDPStrategy)
    assert strategy._fsdp_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert fabric_strategy("ddp") == "ddp" and fabric_strategy("auto") == "auto"
