"""How a training stage's process starts (locally, or under `srun` across a Slurm allocation), and its log."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from alignmix.progress import StageProgress


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


Shown = Callable[[str], "str | None"]  # an output line -> the text the console shows for it, or None
_STEP = re.compile(r"\bstep (\d+)(?:/(\d+))?\b")
_CHECKPOINT = re.compile(r"^Saving checkpoint to '?(.*?)'?$")


class TrainingOutput:
    """What the console shows of a training process's output (litgpt's `... iter 20 step 10 | loss ...` lines,
    post-training's `sft step 3/24 | ...`): step lines move a progress display (steps done, tokens, rate, ETA;
    see `alignmix.progress`) instead of being echoed; resumption, the final evaluation and saved checkpoints (as
    their folder's name) are echoed; the rest stays in the stage log."""

    def __init__(self, stage: str, total_steps: int | None = None, tokens_per_step: int | None = None,
                 out: TextIO | None = None):
        self.stage, self.total, self.per_step = stage, total_steps, tokens_per_step
        self.out = out or sys.stdout
        self.progress: StageProgress | None = None
        if total_steps is not None:  # shown from the start: a released model's first step can take minutes
            self.progress = StageProgress(stage, total_steps, "steps", tokens_per_step, out=self.out)

    def __call__(self, line: str) -> str | None:
        line = line.rstrip()
        if (match := _STEP.search(line)) and not line.startswith(("Resuming", "Saving")):
            if self.progress is None and match.group(2):
                self.progress = StageProgress(self.stage, int(match.group(2)), "steps", self.per_step, out=self.out)
            if self.progress is None:
                return line
            self.progress.update(int(match.group(1)))
            return None
        if (saved := _CHECKPOINT.match(line)) is not None:
            return f"checkpoint saved: {Path(saved.group(1)).parent.name}"
        return line if line.startswith(("Resuming", "Final evaluation")) else None

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def echo_if_worth_showing(line: str, stage: str, shown: Shown, stream: io.TextIOBase | TextIO) -> None:
    text = shown(line)
    if text:
        print(f"  [{stage}] {text}", file=stream, flush=True)


class _LogLines(io.TextIOBase):
    """A stdout that appends to the stage log and echoes the lines worth showing."""

    def __init__(self, log: io.TextIOBase, stage: str, worth_showing: Shown, echo: io.TextIOBase):
        self.log, self.stage, self.worth_showing, self.echo, self.pending = log, stage, worth_showing, echo, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            echo_if_worth_showing(line, self.stage, self.worth_showing, self.echo)
        return len(text)


@contextlib.contextmanager
def output_to_log(log_file: Path, stage: str, worth_showing: Shown) -> Iterator[None]:
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


def run_logged(command: list[str], log_file: Path, stage: str, worth_showing: Shown) -> None:
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
