"""An SFT or DPO stage of a run: its data file (given, or written from training-split scenario questions),
checks before any training, then the Fabric job in its own process (under `srun` on Slurm)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Literal

from alignmix.outputs import ModelOutput
from alignmix.recipe import DPOSettings, SFTSettings, TamperStage
from alignmix.scenarios import Scenario
from alignmix.train.chat import install_chat_tokenizer
from alignmix.train.launch import LOCAL, Launch, TrainingOutput, run_logged
from alignmix.train.post_job import JOBS, PostTrainJob
from alignmix.train.step_checkpoints import latest_whole_step


def post_training_job(
    kind: Literal["sft", "dpo"], settings: SFTSettings | DPOSettings, start_dir: Path, out_dir: Path, seed: int,
    scenarios: list[Scenario], launch: Launch = LOCAL,
) -> PostTrainJob:
    """Write the data and `OUT/job.yaml`; refuse bad data or a tokenizer that does not fit, before training.

    The data is the recipe's file, or `OUT/data.json` written from the training-split questions."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job_type = JOBS[kind]
    data_file = settings.data
    if data_file is None:
        data_file = out_dir / "data.json"
        data_file.write_text(json.dumps(job_type.scenario_data(scenarios), indent=1))
    job = job_type.model_validate({
        "stage": settings.name if isinstance(settings, TamperStage) else kind, "checkpoint_dir": start_dir,
        "data_file": data_file, "out_dir": out_dir, "devices": launch.devices(settings.devices),
        "num_nodes": launch.num_nodes(settings.num_nodes), "seed": seed, "settings": settings,
        **({"data_format": settings.format} if isinstance(settings, SFTSettings) and settings.data else {}),
    })
    job.check_data()
    from litgpt import Config

    config = Config.from_file(start_dir / "model_config.yaml")
    install_chat_tokenizer(start_dir, out_dir / "tokenizer", config.padded_vocab_size, kind)
    job.write(out_dir / "job.yaml")
    return job


def run_post_training(
    kind: Literal["sft", "dpo"], settings: SFTSettings | DPOSettings, start_dir: Path, out_dir: Path, seed: int,
    scenarios: list[Scenario], log_file: Path, launch: Launch = LOCAL,
) -> dict:
    """Run the stage's job to `OUT/final/`, resuming from its latest whole step state (damaged or unfinished
    later ones removed, saying why); returns what was resumed and the last logged metrics."""
    resumed = latest_whole_step(out_dir, "state.pth", print)
    post_training_job(kind, settings, start_dir, out_dir, seed, scenarios, launch)
    command = [*launch.prefix, sys.executable, "-m", "alignmix.train.posttrain", str(out_dir / "job.yaml")]
    shown = TrainingOutput(kind)  # post-training prints `step N/TOTAL`
    try:
        run_logged(command, log_file, kind, shown)
    finally:
        shown.close()
    with ModelOutput(out_dir).metrics_path.open() as handle:
        last = list(csv.DictReader(handle))[-1]
    final = ModelOutput(out_dir).final
    return {"resumed_from": resumed.parent.name if resumed else None, "final_checkpoint": str(final),
            "steps": int(last["step"]), "final_metrics": {k: float(v) for k, v in last.items() if v and k != "step"}}
