"""An sbatch script that runs one training stage across Slurm nodes.

The batch step runs `alignmix train ... --launcher srun` once, on the first node: it reuses or builds the
stage's inputs (mixture chunks, tokenizer, the previous stage's weights), then starts the training process
with `srun` on every task of the allocation (one per GPU, or one CPU process per node with `--gpus-per-node 0`),
where Lightning reads the Slurm environment and
litgpt's `devices` / `num_nodes` (or the SFT / DPO job's) match the allocation.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlurmJob:
    recipe_file: Path
    stage: str
    run_dir: Path
    nodes: int
    gpus_per_node: int
    cpus_per_task: int = 8
    partition: str | None = None
    time: str | None = None


def sbatch_script(job: SlurmJob, workdir: Path) -> str:
    """The script's text; paths are made absolute so it runs from any folder."""
    run_dir = job.run_dir.resolve()
    optional = [f"#SBATCH --partition={job.partition}"] if job.partition else []
    optional += [f"#SBATCH --time={job.time}"] if job.time else []
    command = [
        sys.executable, "-m", "alignmix", "train", str(job.recipe_file.resolve()), "--stage", job.stage,
        "--out", str(run_dir), "--launcher", "srun", "--nodes", str(job.nodes),
        "--gpus-per-node", str(job.gpus_per_node),
    ]
    gpus = [f"#SBATCH --gpus-per-node={job.gpus_per_node}"] if job.gpus_per_node else []  # 0: a CPU job
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=alignmix-{job.stage.replace('/', '-')}",
        f"#SBATCH --nodes={job.nodes}",
        f"#SBATCH --ntasks-per-node={max(job.gpus_per_node, 1)}",
        *gpus,
        f"#SBATCH --cpus-per-task={job.cpus_per_task}",
        f"#SBATCH --output={run_dir / 'logs' / ('slurm-' + job.stage.replace('/', '-') + '-%j.out')}",
        *optional,
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir.resolve()))}",
        f"# {job.nodes} node(s) x {job.gpus_per_node or 'no'} GPU(s): inputs once here, training under srun on every"
        " task",
        shlex.join(command),
        "",
    ]
    return "\n".join(lines)
