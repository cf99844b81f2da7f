"""Running `litgpt pretrain` for a stage, resuming from its last step checkpoint after an interruption."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from alignmix.checkpoints.weights import load_torch_file, refuse_non_finite
from alignmix.outputs import ModelOutput
from alignmix.recipe import TrainingStage
from alignmix.train.launch import LOCAL, Launch, TrainingOutput, output_to_log, run_logged
from alignmix.train.litgpt_config import StageFiles, pretrain_config
from alignmix.train.step_checkpoints import latest_whole_step, write_sha256

def record_step_checkpoint_hashes() -> None:
    """Make litgpt's pretrain record the sha256 of each step checkpoint it saves, once it is saved."""
    import litgpt.pretrain

    original = litgpt.pretrain.save_checkpoint
    if getattr(original, "records_sha256", False):
        return

    def save_checkpoint(fabric, state, tokenizer_dir, checkpoint_file):  # noqa: ANN001, ANN202 (litgpt's signature)
        original(fabric, state, tokenizer_dir, checkpoint_file)
        if fabric.global_rank == 0 and Path(checkpoint_file).parent.name.startswith("step-"):
            write_sha256(Path(checkpoint_file))

    save_checkpoint.records_sha256 = True  # type: ignore[attr-defined]
    litgpt.pretrain.save_checkpoint = save_checkpoint


def data_parallel_on_cpu() -> None:
    """Where there is no GPU, make litgpt's pretrain train on several CPU processes (nodes, devices) with DDP
    over gloo: litgpt shards the model with FSDP whenever it trains on more than one device, and Lightning runs
    FSDP on GPUs only. A GPU machine keeps litgpt's FSDP."""
    import litgpt.pretrain
    from lightning.fabric.strategies import DDPStrategy

    if torch.cuda.is_available():
        return

    # Stands where litgpt calls FSDPStrategy(...). Its isinstance(strategy, FSDPStrategy) checks then fail, as they
    # should: litgpt initialises the weights itself, as on one device, instead of leaving that to FSDP.
    class DDPOverGloo:
        def __new__(cls, **_fsdp_options: Any) -> DDPStrategy:  # type: ignore[misc]
            return DDPStrategy(process_group_backend="gloo")

    litgpt.pretrain.FSDPStrategy = DDPOverGloo


def quiet_unless_first_task() -> None:
    """Under srun, send the stdout of every task but the first to /dev/null: litgpt prints on each node's first
    process, so a job of N nodes would repeat every line N times in the stage log (stderr, errors, stays)."""
    if int(os.environ.get("SLURM_PROCID", "0")) > 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)


def usable_step_checkpoint(out_dir: Path, echo: Callable[[str], None]) -> Path | None:
    """The latest step checkpoint whose weights match the sha256 recorded when they were written (later ones are
    removed, saying why); one whose weights hold NaN or infinite values is refused."""
    weights = latest_whole_step(out_dir, "lit_model.pth", echo)
    if weights is None:
        return None
    refuse_non_finite(load_torch_file(weights, mmap=True)["model"], weights)
    return weights.parent


def reanchor_data_state(step: Path, data_dir: Path, echo: Callable[[str], None]) -> None:
    """Point the LitData state in a step checkpoint at `data_dir`, where the run folder has moved since it was
    written (LitData refuses to resume from another path)."""
    weights = step / "lit_model.pth"
    state = load_torch_file(weights, mmap=True)
    dataset = state.get("train_dataloader", {}).get("dataset", {})
    current = str(data_dir.absolute().resolve())  # as LitData resolves its input_dir
    if dataset.get("input_dir_path") in (None, current):
        return
    echo(f"  {step.name}: the run folder has moved; its data state now reads {current}")
    dataset["input_dir_path"] = current
    partial = weights.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(weights)
    write_sha256(weights)


def keep_model_weights_only(checkpoint: Path) -> None:
    """Rewrite litgpt's final `{"model", "optimizer", ...}` file as the model's raw state dict, which a later
    stage's `initial_checkpoint_dir` (Fabric `load_raw`), the eval and the HF export all read; weights that
    hold NaN or infinite values (training diverged) are refused."""
    state = load_torch_file(checkpoint)
    refuse_non_finite(state.get("model", state), checkpoint)
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

    record_step_checkpoint_hashes()
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


def run_pretrain(stage: TrainingStage, files: StageFiles, seed: int, log_file: Path, launch: Launch = LOCAL,
                 echo: Callable[[str], None] = print) -> dict:
    """Write `OUT/pretrain.yaml` (resuming from the last step checkpoint that is whole) and run litgpt on it (in
    this process on one device, else as a process under the launch prefix, e.g. srun); returns what was resumed
    and where the model is."""
    resumed_from = usable_step_checkpoint(files.out_dir, echo)
    if resumed_from is not None:
        reanchor_data_state(resumed_from, files.data_dir, echo)
    files.out_dir.mkdir(parents=True, exist_ok=True)
    config = pretrain_config(stage, files, seed, resume=resumed_from, launch=launch)
    config_file = files.out_dir / "pretrain.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    shown = TrainingOutput(stage.name, max(stage.samples // stage.train.global_batch_size, 1),
                           stage.train.global_batch_size * stage.seq_len)
    try:
        if not launch.prefix and single_process(config):
            litgpt_pretrain_in_process(config_file, log_file, stage.name, shown)
        else:
            command = [*launch.prefix, sys.executable, "-m", "alignmix.train.pretrain", "--config", str(config_file)]
            run_logged(command, log_file, stage.name, shown)
    finally:
        shown.close()
    final = ModelOutput(files.out_dir).final
    keep_model_weights_only(final / "lit_model.pth")
    came_from = files.initial_checkpoint_dir / "config.json" if files.initial_checkpoint_dir else None
    if came_from is not None and came_from.is_file():  # the transformers architecture, for export and later stages
        shutil.copyfile(came_from, final / "config.json")
    return {"resumed_from": resumed_from.name if resumed_from else None, "final_checkpoint": str(final)}


if __name__ == "__main__":  # `litgpt pretrain --config FILE` that records each step checkpoint's sha256
    from litgpt.__main__ import main as litgpt_main

    record_step_checkpoint_hashes()
    data_parallel_on_cpu()
    quiet_unless_first_task()
    sys.argv = ["litgpt", "pretrain", *sys.argv[1:]]
    litgpt_main()
