"""How a training stage's process starts (locally, or under `srun` across a Slurm allocation), and its log."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class Launch:
    """`prefix` goes before the training command (e.g. `srun --kill-on-bad-exit=1`); `nodes` and
    `gpus_per_node` override a stage's `num_nodes` and `devices`."""

    prefix: tuple[str, ...] = ()
    nodes: int | None = None
    gpus_per_node: int | None = None

    def devices(self, recipe_devices: int | str) -> int | str:
        """The processes per node: the GPUs per node, one CPU process where that is 0, else the recipe's."""
        if self.gpus_per_node is None:
            return recipe_devices
        return self.gpus_per_node or 1

    def num_nodes(self, recipe_nodes: int) -> int:
        return self.nodes if self.nodes is not None else recipe_nodes


LOCAL = Launch()


def echo_if_worth_showing(
    line: str, stage: str, worth_showing: Callable[[str], bool], stream: io.TextIOBase | TextIO
) -> None:
    if worth_showing(line):
        print(f"  [{stage}] {line.rstrip()}", file=stream, flush=True)


class _LogLines(io.TextIOBase):
    """A stdout that appends to the stage log and echoes the lines worth showing."""

    def __init__(self, log: io.TextIOBase, stage: str, worth_showing: Callable[[str], bool], echo: io.TextIOBase):
        self.log, self.stage, self.worth_showing, self.echo, self.pending = log, stage, worth_showing, echo, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            echo_if_worth_showing(line, self.stage, self.worth_showing, self.echo)
        return len(text)


@contextlib.contextmanager
def output_to_log(log_file: Path, stage: str, worth_showing: Callable[[str], bool]) -> Iterator[None]:
    """Within the block, stdout goes to the log (lines worth showing echoed) and stderr (fd 2) to the log."""
    saved_stderr = os.dup(2)
    with log_file.open("a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(_LogLines(log, stage, worth_showing, sys.stdout)):
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


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
            echo_if_worth_showing(line, stage, worth_showing, sys.stdout)
        code = process.wait()
    if code != 0:
        raise RuntimeError(f"stage '{stage}': {' '.join(command[:4])} ... exited with {code}; see {log_file}")


def launch_for(launcher: str, nodes: int | None = None, gpus_per_node: int | None = None) -> Launch:
    """How `--launcher local|srun` starts training: here, or under srun on every task of a Slurm allocation."""
    return Launch(("srun", "--kill-on-bad-exit=1") if launcher == "srun" else (), nodes, gpus_per_node)
