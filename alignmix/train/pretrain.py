"""Running `litgpt pretrain` for a stage, resuming from its last step checkpoint after an interruption."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from alignmix.recipe import TrainingStage
from alignmix.train.litgpt_config import StageFiles, pretrain_config


_STEP = re.compile(r"\bstep (\d+) \|")


def _worth_showing(line: str) -> bool:
    """Every tenth optimizer step, checkpoints, resumption and the final evaluation."""
    if line.startswith(("Resuming", "Saving checkpoint", "Final evaluation")):
        return True
    match = _STEP.search(line)
    return match is not None and int(match.group(1)) % 10 == 0


def latest_step_checkpoint(out_dir: Path) -> Path | None:
    steps = sorted(out_dir.glob("step-*/lit_model.pth"))
    return steps[-1].parent if steps else None


def run_pretrain(stage: TrainingStage, files: StageFiles, seed: int, log_file: Path) -> dict:
    """Write `OUT/pretrain.yaml` and run litgpt on it; returns what was resumed and where the model is."""
    out_dir = files.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed_from = latest_step_checkpoint(out_dir)
    config = pretrain_config(stage, files, seed, resume=resumed_from is not None)
    config_file = out_dir / "pretrain.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "litgpt", "pretrain", "--config", str(config_file)]
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()
            if _worth_showing(line):
                print(f"  [{stage.name}] {line.rstrip()}", flush=True)
        code = process.wait()
    if code != 0:
        raise RuntimeError(f"stage '{stage.name}': litgpt pretrain exited with {code}; see {log_file}")
    final = out_dir / "final"
    return {"resumed_from": resumed_from.name if resumed_from else None, "final_checkpoint": str(final)}
