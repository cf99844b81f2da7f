"""Progress of a long stage (training steps, scored requests, documents tagged, ...): done of total, the rate and
the ETA.

On a terminal it is a rich progress bar that ends as one finished line; elsewhere (a log, a pipe, a test) one
short line every `every` seconds (also while one item takes longer) and one at the end, never a half-drawn bar.
Lines stay under 80 columns (a long label is shortened).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

WIDTH = 79  # a line's most characters: a console 80 columns wide does not wrap it


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _n(count: float) -> str:
    """`812,345`; from a million on `112.81M`, from a billion `1.20B` (a line stays short)."""
    if count >= 1e9:
        return f"{count / 1e9:,.2f}B"
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count:,.0f}"


def _of(done: int, total: int, unit: str) -> str:
    """`3/20 steps`; bytes in kB, MB or GB by the total (`0.4/1.2 MB`)."""
    if unit != "bytes":
        return f"{_n(done)}/{_n(total)} {unit}"
    scale, name = (1e9, "GB") if total >= 1e9 else (1e6, "MB") if total >= 1e6 else (1e3, "kB")
    return f"{done / scale:,.1f}/{total / scale:,.1f} {name}"


class StageProgress:
    """Counts `done` of `total` items named `unit` (e.g. steps; `bytes` shows as MB); `per_item` items of `sub_unit`
    each (e.g. tokens per step), or an `amount` of `sub_unit` given with each update (documents read), add the
    amount and its rate. As a context manager it closes itself."""

    def __init__(self, label: str, total: int, unit: str, per_item: int | None = None, sub_unit: str = "tokens",
                 out: TextIO | None = None, every: float = 10.0):
        self.label, self.total, self.unit = label, max(total, 1), unit
        self.per_item, self.sub_unit, self.every = per_item, sub_unit, every
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.printed_at = self.started
        self.done = 0
        self.amount: int | None = None
        self.start_done: int | None = None
        self.start_amount = 0
        self.bar = None
        if getattr(self.out, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
            self.bar = Progress(TextColumn(f"  [{label}]"), BarColumn(bar_width=20), count,
                                TextColumn(f"{'' if unit == 'bytes' else unit} {{task.fields[rate]}}"),
                                TimeRemainingColumn(), console=Console(file=self.out), transient=False)
            self.task = self.bar.add_task(label, total=self.total, rate="")
            self.bar.start()
        else:  # a line every `every` seconds even while one item takes longer (a released model's first step)
            self._stopped = threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stopped.wait(min(self.every / 2, 1.0) if self.every > 0 else 1.0):
            if time.monotonic() - self.printed_at >= self.every and self.done < self.total:  # the end prints once
                self._print()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _amount_and_speed(self, rate: float, elapsed: float) -> tuple[str, str]:
        """`, 6,144 tokens` and `, 512 tokens/s` (of the amount, where there is one), else `, 2.00 steps/s`."""
        if self.amount is not None:
            speed = (self.amount - self.start_amount) / elapsed if elapsed > 0 else 0.0
            return f", {_n(self.amount)} {self.sub_unit}", f", {_n(speed)} {self.sub_unit}/s"
        if self.per_item:
            return f", {_n(self.done * self.per_item)} {self.sub_unit}", f", {_n(rate * self.per_item)} {self.sub_unit}/s"
        return "", f", {rate:.2f} {self.unit}/s" if rate < 100 else f", {_n(rate)} {self.unit}/s"

    def line(self) -> str:
        """`[label] 3/20 steps (15%), 6,144 tokens, 512 tokens/s, ETA 0:00:34` (before the first item is done:
        the time elapsed instead of the rate's ETA); a label too long for the width is shortened."""
        elapsed = time.monotonic() - self.started
        counted = self.done - (self.start_done or 0)  # a resumed run's earlier steps are not this run's rate
        rate = counted / elapsed if elapsed > 0 else 0.0
        amount, speed = self._amount_and_speed(rate, elapsed)
        if self.done >= self.total and counted <= 0 and (self.amount or 0) <= self.start_amount:
            speed = ""  # all of it done by an earlier run
        eta = (f", ETA {_clock((self.total - self.done) / rate)}" if rate > 0 and self.done < self.total
               else "" if self.done >= self.total else f", {_clock(elapsed)} elapsed")
        rest = f" {_of(self.done, self.total, self.unit)} ({100 * self.done / self.total:.0f}%){amount}{speed}{eta}"
        if len(rest) + len(self.label) + 4 > WIDTH and amount:  # the amount names the unit: its rate need not
            rest = rest.replace(f" {self.sub_unit}/s", "/s")
        room = max(WIDTH - len(rest) - 4, 8)
        label = self.label if len(self.label) <= room else self.label[: room - 1] + "…"
        return f"  [{label}]{rest}"

    def resumed(self, done: int, amount: int | None = None) -> None:
        """What an earlier run already did (tasks completed before a rerun): shown, but not this run's rate."""
        self.start_done, self.start_amount = done, amount or 0
        self.update(done, amount)

    def update(self, done: int, amount: int | None = None) -> None:
        """`done` items finished so far (without `resumed`, the first call's count is where a resumed run
        started), and with `amount` the sub-units so far."""
        if self.start_done is None:
            self.start_done = max(done - 1, 0)
        self.done = min(done, self.total)
        if amount is not None:
            self.amount = amount
        if self.bar is not None:
            elapsed = time.monotonic() - self.started
            rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
            shown = self._amount_and_speed(rate, elapsed)[1].removeprefix(", ")
            self.bar.update(self.task, completed=self.done, rate=shown if amount is not None or self.per_item
                            else f"{rate:.2f}/s")
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
