"""How a training stage's process starts (locally, or under `srun` across a Slurm allocation), and its log."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Launch:
    """`prefix` goes before the training command (e.g. `srun --kill-on-bad-exit=1`); `nodes` and
    `gpus_per_node` override a stage's `num_nodes` and `devices`."""

    prefix: tuple[str, ...] = ()
    nodes: int | None = None
    gpus_per_node: int | None = None

    def devices(self, recipe_devices: int | str) -> int | str:
        return self.gpus_per_node if self.gpus_per_node is not None else recipe_devices

    def num_nodes(self, recipe_nodes: int) -> int:
        return self.nodes if self.nodes is not None else recipe_nodes


LOCAL = Launch()


def run_logged(command: list[str], log_file: Path, stage: str, worth_showing: Callable[[str], bool]) -> None:
    """Run `command`, appending its output to `log_file` and echoing the lines worth showing; raise on failure."""
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()
            if worth_showing(line):
                print(f"  [{stage}] {line.rstrip()}", flush=True)
        code = process.wait()
    if code != 0:
        raise RuntimeError(f"stage '{stage}': {' '.join(command[:4])} ... exited with {code}; see {log_file}")
