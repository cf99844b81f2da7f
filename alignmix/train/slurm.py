"""sbatch scripts that run alignmix across Slurm nodes: one training stage (`alignmix train`), or one condition
of a sweep (`alignmix sweep ... --condition NAME`).

The batch step runs the alignmix command with `--launcher srun` once, on the first node: it reuses or builds the
stage's inputs (mixture chunks, tokenizer, the previous stage's weights), then starts each training process with
`srun` on every task of the allocation (one per GPU, or one CPU process per node with `--gpus-per-node 0`),
where Lightning reads the Slurm environment and litgpt's `devices` / `num_nodes` (or the SFT / DPO job's) match
the allocation.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlurmResources:
    nodes: int
    gpus_per_node: int
    cpus_per_task: int = 8
    partition: str | None = None
    time: str | None = None

    def launcher_options(self) -> list[str]:
        """What the command inside the job takes to start training under srun on this allocation."""
        return ["--launcher", "srun", "--nodes", str(self.nodes), "--gpus-per-node", str(self.gpus_per_node)]


def alignmix_command(*args: str) -> list[str]:
    """`python -m alignmix ARGS` with this interpreter, so the job runs the same installation."""
    return [sys.executable, "-m", "alignmix", *args]


def set_options(overrides: list[str]) -> list[str]:
    return [option for override in overrides for option in ("--set", override)]


def training_command(recipe_file: Path, stage: str, run_dir: Path, resources: SlurmResources,
                     overrides: list[str]) -> list[str]:
    return alignmix_command("train", str(recipe_file.resolve()), "--stage", stage, *set_options(overrides),
                            "--out", str(run_dir.resolve()), *resources.launcher_options())


def sbatch_script(name: str, command: list[str], resources: SlurmResources, log_dir: Path, workdir: Path) -> str:
    """The script's text; paths are made absolute so it runs from any folder. The job log is
    `LOG_DIR/slurm-NAME-<job id>.out`."""
    safe = name.replace("/", "-")
    optional = [f"#SBATCH --partition={resources.partition}"] if resources.partition else []
    optional += [f"#SBATCH --time={resources.time}"] if resources.time else []
    gpus = [f"#SBATCH --gpus-per-node={resources.gpus_per_node}"] if resources.gpus_per_node else []  # 0: CPU job
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=alignmix-{safe}",
        f"#SBATCH --nodes={resources.nodes}",
        f"#SBATCH --ntasks-per-node={max(resources.gpus_per_node, 1)}",
        *gpus,
        f"#SBATCH --cpus-per-task={resources.cpus_per_task}",
        f"#SBATCH --output={log_dir.resolve() / f'slurm-{safe}-%j.out'}",
        *optional,
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir.resolve()))}",
        f"# {resources.nodes} node(s) x {resources.gpus_per_node or 'no'} GPU(s): inputs once here, training under"
        " srun on every task",
        shlex.join(command),
        "",
    ]
    return "\n".join(lines)


def write_script(path: Path, script: str, log_dir: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    return path


def sbatch_available() -> bool:
    return shutil.which("sbatch") is not None


def submit(path: Path, wait: bool) -> subprocess.CompletedProcess:
    """`sbatch [--wait] PATH`; with --wait its exit status is the job's."""
    return subprocess.run(["sbatch", *(["--wait"] if wait else []), str(path)], capture_output=True, text=True)


def submit_all_and_wait(paths: list[Path]) -> list[tuple[Path, int, str]]:
    """Submit every script at once (`sbatch --wait`, so the jobs run side by side as the cluster allows) and
    wait for all; (script, exit status, sbatch's output) for each, in order."""
    processes = [(path, subprocess.Popen(["sbatch", "--wait", str(path)], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)) for path in paths]
    return [(path, process.wait(), (process.stdout.read() if process.stdout else "").strip())
            for path, process in processes]
