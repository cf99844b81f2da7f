"""Progress of a long stage (training steps, scored requests, ...): done of total, the rate and the ETA.

On a terminal it is a rich progress bar that ends as one finished line; elsewhere (a log, a pipe, a test) one
short line every `every` seconds (also while one item takes longer) and one at the end, never a half-drawn bar. Lines stay under 80
columns.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StageProgress:
    """Counts `done` of `total` items named `unit` (e.g. steps); `per_item` items of `sub_unit` each (e.g.
    tokens per step) add the amount and its rate."""

    def __init__(self, label: str, total: int, unit: str, per_item: int | None = None, sub_unit: str = "tokens",
                 out: TextIO | None = None, every: float = 10.0):
        self.label, self.total, self.unit = label, max(total, 1), unit
        self.per_item, self.sub_unit, self.every = per_item, sub_unit, every
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.printed_at = self.started
        self.done = 0
        self.start_done: int | None = None
        self.bar = None
        if getattr(self.out, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(f"  [{label}]"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                TextColumn(f"{unit} {{task.fields[rate]}}"), TimeRemainingColumn(),
                                console=Console(file=self.out), transient=False)
            self.task = self.bar.add_task(label, total=self.total, rate="")
            self.bar.start()
        else:  # a line every `every` seconds even while one item takes longer (a released model's first step)
            self._stopped = threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stopped.wait(min(self.every / 2, 1.0) if self.every > 0 else 1.0):
            if time.monotonic() - self.printed_at >= self.every:
                self._print()

    def line(self) -> str:
        """`[label] 3/20 steps (15%), 6,144 tokens, 512 tokens/s, ETA 0:00:34` (before the first item is done:
        the time elapsed instead of the rate's ETA)."""
        elapsed = time.monotonic() - self.started
        counted = self.done - (self.start_done or 0)  # a resumed run's earlier steps are not this run's rate
        rate = counted / elapsed if elapsed > 0 else 0.0
        amount = f", {self.done * self.per_item:,} {self.sub_unit}" if self.per_item else ""
        speed = (f", {rate * self.per_item:,.0f} {self.sub_unit}/s" if self.per_item
                 else f", {rate:,.2f} {self.unit}/s")
        eta = (f", ETA {_clock((self.total - self.done) / rate)}" if rate > 0 and self.done < self.total
               else "" if self.done >= self.total else f", {_clock(elapsed)} elapsed")
        return (f"  [{self.label}] {self.done:,}/{self.total:,} {self.unit}"
                f" ({100 * self.done / self.total:.0f}%){amount}{speed}{eta}")

    def update(self, done: int) -> None:
        """`done` items finished so far (the first call's count is where a resumed run started)."""
        if self.start_done is None:
            self.start_done = max(done - 1, 0)
        self.done = min(done, self.total)
        if self.bar is not None:
            elapsed = time.monotonic() - self.started
            rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
            shown = f"{rate * self.per_item:,.0f} {self.sub_unit}/s" if self.per_item else f"{rate:.2f}/s"
            self.bar.update(self.task, completed=self.done, rate=shown)
        elif time.monotonic() - self.printed_at >= self.every:
            self._print()

    def _print(self) -> None:
        print(self.line(), file=self.out, flush=True)
        self.printed_at = time.monotonic()

    def close(self) -> None:
        """End the bar (it stays as one finished line), or print the last line."""
        if self.bar is not None:
            self.bar.stop()
            return
        self._stopped.set()
        self._beat.join()
        if self.done:
            self._print()


@contextlib.contextmanager
def ticking(label: str, what: str, out: TextIO | None = None, every: float = 10.0) -> Iterator[None]:
    """For one long call that reports nothing itself (a model's conversion): `[label] what ...` at the start,
    the seconds elapsed every `every` seconds while it runs, and the total when it ends."""
    out = out or sys.stdout
    print(f"  [{label}] {what} ...", file=out, flush=True)
    started, done = time.monotonic(), threading.Event()

    def tick() -> None:
        while not done.wait(every):
            print(f"  [{label}] {what}: {_clock(time.monotonic() - started)} so far", file=out, flush=True)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    print(f"  [{label}] {what}: done in {_clock(time.monotonic() - started)}", file=out, flush=True)
