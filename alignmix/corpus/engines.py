"""Where a corpus pipeline's tasks run: datatrove's LocalPipelineExecutor, RayPipelineExecutor on a running Ray
cluster (RAY_ADDRESS, else a local one), or SlurmPipelineExecutor (an array job and its stats merge, waited for).
Tagging and mixing both run their tasks here; every executor skips the tasks that completed, so a killed task
reruns alone.

Progress: each task writes its counts so far (`TaskCounts`) into `<logging dir>/progress/<rank>.json`, and the
driver sums them every half second into a `StageProgress` (`Watch`). Files work the same for a local executor's
worker processes and for Ray or Slurm tasks on a shared file system; where the driver cannot see them, the
display stays at what it sees and shows the whole once the tasks complete."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from alignmix.errors import AlignmixError
from alignmix.progress import StageProgress
from alignmix.recipe import Executor, Mixing

if TYPE_CHECKING:
    from datatrove.pipeline.base import PipelineStep


class EngineError(AlignmixError):
    """Tasks that did not complete on their executor: names the job and where its logs are."""


@dataclass(frozen=True)
class SlurmSettings:
    """Where datatrove's Slurm executor runs the tasks (one array job, then its stats merge)."""

    partition: str = Mixing.model_fields["partition"].default
    time: str = Mixing.model_fields["time"].default
    cpus_per_task: int = Mixing.model_fields["cpus_per_task"].default
    poll_seconds: float = 2.0


PROGRESS_FOLDER = "progress"


class TaskCounts:
    """A task's counts so far (`bytes`, `documents`, `tokens`, ...), written atomically to
    `<logging_dir>/progress/<rank>.json` at most every `every` seconds and by `flush`; no file without a
    `logging_dir`."""

    def __init__(self, logging_dir: str | None, rank: int, every: float = 0.5):
        self.path = Path(logging_dir) / PROGRESS_FOLDER / f"{rank:05d}.json" if logging_dir else None
        self.counts: dict[str, int] = {}
        self.every = every
        self.written_at = 0.0

    def set(self, **counts: int) -> None:
        """Set these counts to their values so far; written when `every` seconds have passed."""
        self.counts.update(counts)
        if time.monotonic() - self.written_at >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.counts))
        os.replace(partial, self.path)
        self.written_at = time.monotonic()


@dataclass(frozen=True)
class Watch:
    """How the driver shows a pipeline's progress: the tasks' counts of `unit` summed, of `total`, with the
    summed `amount` (another count, e.g. documents) and its rate."""

    label: str
    total: int
    unit: str
    amount: str | None = None
    out: TextIO | None = None  # default: stdout


def summed_counts(logging_dir: Path) -> dict[str, int]:
    """The tasks' counts (see `TaskCounts`) added up; a file being replaced is read at the next look."""
    total: dict[str, int] = {}
    for path in sorted((logging_dir / PROGRESS_FOLDER).glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            for key, value in json.loads(path.read_text()).items():
                total[key] = total.get(key, 0) + value
    return total


@contextlib.contextmanager
def watched(watch: Watch | None, logging_dir: Path, every: float = 0.5) -> Iterator[None]:
    """While the block runs the pipeline, show its tasks' summed counts; when it ends without an error, the
    whole (what tasks the driver cannot see did is then done too)."""
    if watch is None:
        yield
        return

    def shown() -> tuple[int, int | None]:
        counts = summed_counts(logging_dir)
        return counts.get(watch.unit, 0), counts.get(watch.amount, 0) if watch.amount else None

    progress = StageProgress(watch.label, watch.total, watch.unit, sub_unit=watch.amount or "", out=watch.out)
    progress.resumed(*shown())  # tasks completed by an earlier run
    stopped = threading.Event()

    def poll() -> None:
        while not stopped.wait(every):
            progress.update(*shown())

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    completed = False
    try:
        yield
        completed = True
    finally:
        stopped.set()
        poller.join()
        if completed:
            progress.update(watch.total, shown()[1])
        progress.close()


def clear_unless_planned_as(record: Path, plan: dict[str, Any], leftovers: Path, clear: Callable[[], None]) -> bool:
    """Keep earlier tasks' work only when it was planned as `plan`: a completion marker names a rank, and under
    another plan (other inputs, settings or task count) that rank is other work, which reused would drop or
    repeat documents. When `record` (JSON) holds another plan, or is missing while `leftovers` exists, call
    `clear`; then record `plan`. True when cleared."""
    wanted = json.loads(json.dumps(plan, default=str))
    previous = json.loads(record.read_text()) if record.is_file() else None
    stale = previous != wanted if previous is not None else leftovers.exists()
    if stale:
        clear()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted, indent=2, sort_keys=True))
    return stale


def _wait_for_slurm(job_id: str, job_name: str, logging_dir: Path, tasks: int, poll_seconds: float, what: str) -> None:
    """Block while the array job or its stats merge (both named `job_name`) is queued or running; refuse,
    naming the logs, when a task did not complete."""
    while True:
        queued = subprocess.run(["squeue", "-h", "-n", job_name, "-o", "%i"], capture_output=True, text=True)
        if queued.returncode != 0 or not queued.stdout.strip():
            break
        time.sleep(poll_seconds)
    done = len(list((logging_dir / "completions").glob("*")))
    if done < tasks or not (logging_dir / "stats.json").is_file():
        raise EngineError(f"Slurm job {job_id}: {done} of {tasks} {what} task(s) completed; see the task logs in"
                          f" {logging_dir / 'logs'} and {logging_dir / 'slurm_logs'}; rerun to run only the rest")


def _executor(executor: Executor, pipeline: list[PipelineStep], tasks: int, logging_dir: Path, slurm: SlurmSettings,
              job_name: str):
    if executor == "slurm":
        from datatrove.executor.slurm import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline=pipeline, tasks=tasks, time=slurm.time, partition=slurm.partition,
            cpus_per_task=slurm.cpus_per_task, job_name=job_name, logging_dir=str(logging_dir),
            slurm_logs_folder=str(logging_dir / "slurm_logs"), skip_completed=True,
            venv_path=str(Path(sys.prefix) / "bin" / "activate"), mail_type="NONE", requeue=False,
        )
    if executor == "ray":
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("executor ray needs Ray: pip install 'ray==2.60.0'") from exc
        from datatrove.executor.ray import RayPipelineExecutor

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
        return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, logging_dir=str(logging_dir), skip_completed=True)
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(
        pipeline=pipeline, tasks=tasks, workers=tasks, logging_dir=str(logging_dir), skip_completed=True
    )


def run_pipeline(executor: Executor, pipeline: list[PipelineStep], tasks: int, logging_dir: Path,
                 slurm: SlurmSettings, job_name: str, what: str, watch: Watch | None = None) -> None:
    """Run `pipeline` as `tasks` tasks on `executor`, logs and completion markers in `logging_dir`; returns when
    every task has completed (a Slurm array is waited for), else raises naming the logs. With `watch`, the
    tasks' counts show as progress meanwhile."""
    runner = _executor(executor, pipeline, tasks, logging_dir, slurm, job_name)
    with watched(watch, logging_dir):
        runner.run()
        if executor == "slurm" and runner.job_id != -1:  # submitted: wait for the array and the stats merge
            _wait_for_slurm(runner.job_id, job_name, logging_dir, tasks, slurm.poll_seconds, what)
