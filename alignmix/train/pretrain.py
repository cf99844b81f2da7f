"""Running `litgpt pretrain` for a stage, resuming from its last step checkpoint after an interruption."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from alignmix.recipe import TrainingStage
from alignmix.train.launch import LOCAL, Launch, TrainingOutput, output_to_log, run_logged
from alignmix.train.litgpt_config import StageFiles, pretrain_config

def latest_step_checkpoint(out_dir: Path) -> Path | None:
    steps = sorted(out_dir.glob("step-*/lit_model.pth"))
    return steps[-1].parent if steps else None


def keep_model_weights_only(checkpoint: Path) -> None:
    """Rewrite litgpt's final `{"model", "optimizer", ...}` file as the model's raw state dict, which a later
    stage's `initial_checkpoint_dir` (Fabric `load_raw`), the eval and the HF export all read."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "model" in state:
        partial = checkpoint.with_suffix(".partial")
        torch.save(state["model"], partial)
        partial.replace(checkpoint)


def single_process(config: dict[str, Any]) -> bool:
    """Whether the generated config trains on one device of one node (then litgpt runs in this process)."""
    devices = config["devices"]
    if devices == "auto":
        devices = torch.cuda.device_count() or 1
    return int(devices) * int(config["num_nodes"]) == 1


def litgpt_pretrain_in_process(config_file: Path, log_file: Path, stage: str, shown: TrainingOutput) -> None:
    """`litgpt pretrain --config FILE` through litgpt's own CLI, in this process (no second interpreter start
    and litgpt import); output goes to the stage log."""
    from litgpt.__main__ import main as litgpt_main

    saved_argv = sys.argv
    sys.argv = ["litgpt", "pretrain", "--config", str(config_file)]
    try:
        with output_to_log(log_file, stage, shown):
            print(f"$ litgpt pretrain --config {config_file}  (in process)")
            litgpt_main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"stage '{stage}': litgpt pretrain exited with {exc.code}; see {log_file}") from None
    except Exception as exc:  # litgpt's own argument checks and training errors
        raise RuntimeError(f"stage '{stage}': litgpt pretrain failed: {exc}; see {log_file}") from exc
    finally:
        sys.argv = saved_argv


def run_pretrain(stage: TrainingStage, files: StageFiles, seed: int, log_file: Path, launch: Launch = LOCAL) -> dict:
    """Write `OUT/pretrain.yaml` (resuming where a step checkpoint exists) and run litgpt on it (in this process on one device, else as a process under
    the launch prefix, e.g. srun); returns what was resumed and where the model is."""
    resumed_from = latest_step_checkpoint(files.out_dir)
    files.out_dir.mkdir(parents=True, exist_ok=True)
    config = pretrain_config(stage, files, seed, resume=resumed_from is not None, launch=launch)
    config_file = files.out_dir / "pretrain.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    shown = TrainingOutput(stage.name, max(stage.samples // stage.train.global_batch_size, 1),
                           stage.train.global_batch_size * stage.seq_len)
    try:
        if not launch.prefix and single_process(config):
            litgpt_pretrain_in_process(config_file, log_file, stage.name, shown)
        else:
            command = [*launch.prefix, sys.executable, "-m", "litgpt", "pretrain", "--config", str(config_file)]
            run_logged(command, log_file, stage.name, shown)
    finally:
        shown.close()
    final = files.out_dir / "final"
    keep_model_weights_only(final / "lit_model.pth")
    came_from = files.initial_checkpoint_dir / "config.json" if files.initial_checkpoint_dir else None
    if came_from is not None and came_from.is_file():  # the transformers architecture, for export and later stages
        shutil.copyfile(came_from, final / "config.json")
    return {"resumed_from": resumed_from.name if resumed_from else None, "final_checkpoint": str(final)}
