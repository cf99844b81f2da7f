"""An SFT or DPO stage of a run: its data file (given, or written from training-split scenario questions),
checks before any training, then the Fabric job in its own process (under `srun` on Slurm)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Literal

from alignmix.recipe import DPOSettings, SFTSettings, TamperStage
from alignmix.scenarios import Scenario
from alignmix.train.chat import install_chat_tokenizer
from alignmix.train.chat_data import (
    load_preferences,
    load_sft,
    preference_examples,
    scenario_preferences,
    scenario_sft_examples,
)
from alignmix.train.launch import LOCAL, Launch, TrainingOutput, run_logged
from alignmix.train.posttrain import PostTrainJob
from alignmix.train.step_checkpoints import latest_whole_step


def _data_file(kind: str, settings: SFTSettings | DPOSettings, scenarios: list[Scenario], out_dir: Path) -> Path:
    """The stage's data: the recipe's file, or `OUT/data.json` written from the training-split questions."""
    if settings.data is not None:
        return settings.data
    rows = scenario_sft_examples(scenarios) if kind == "sft" else preference_examples(scenario_preferences(scenarios))
    path = out_dir / "data.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def post_training_job(
    kind: Literal["sft", "dpo"], settings: SFTSettings | DPOSettings, start_dir: Path, out_dir: Path, seed: int,
    scenarios: list[Scenario], launch: Launch = LOCAL,
) -> PostTrainJob:
    """Write the data and `OUT/job.yaml`; refuse bad data or a tokenizer that does not fit, before training."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data_file = _data_file(kind, settings, scenarios, out_dir)
    data_format = settings.format if isinstance(settings, SFTSettings) and settings.data is not None else (
        "sharegpt" if kind == "sft" else "preference")
    if kind == "sft":
        load_sft(data_file, data_format)  # type: ignore[arg-type]
    else:
        load_preferences(data_file)
    from litgpt import Config

    config = Config.from_file(start_dir / "model_config.yaml")
    install_chat_tokenizer(start_dir, out_dir / "tokenizer", config.padded_vocab_size, kind)
    values = settings.model_dump(exclude={"data", "from_scenarios", "format", "devices", "num_nodes", "name",
                                          "from_stage", "kind", "lora_r", "lora_alpha", "lora_dropout"})
    if isinstance(settings, TamperStage) and settings.kind == "lora":
        values.update(lora_r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout)
    stage = settings.name if isinstance(settings, TamperStage) else kind
    job = PostTrainJob(
        kind=kind, stage=stage, checkpoint_dir=str(start_dir), data_file=str(data_file), data_format=data_format,
        out_dir=str(out_dir), devices=launch.devices(settings.devices), num_nodes=launch.num_nodes(settings.num_nodes),
        seed=seed, **{**values, "betas": list(values["betas"])},
    )
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
    with (out_dir / "logs" / "metrics.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    return {"resumed_from": resumed.parent.name if resumed else None, "final_checkpoint": str(out_dir / "final"),
            "steps": int(last["step"]), "final_metrics": {k: float(v) for k, v in last.items() if v and k != "step"}}
