"""Share schedules within a stage: exact tokens per mixture entry in each window of the stage's token stream.

A stage with a scheduled entry is cut into `outputs.WINDOWS` (100) windows of its token stream, window w holding
stream tokens [w T // 100, (w + 1) T // 100): a hundredth of the stage, the resolution schedules are written at
(whole percents). A step at a whole percent falls on a window edge, so "none before 90%" is exactly none; a
point between edges is honoured on average over its window. Edges are token positions, not sample edges: the
dose of a schedule is then exact (a share of 0.5 over the last 10% of 300,000 tokens is 15,000 tokens), and a
training sample at an edge holds the end of one window and the start of the next.

In each window a scheduled entry takes its schedule's mean share of the window (the integral of the
piecewise-linear schedule over it). The other entries split what the schedules leave as they would split a
whole stage: a fraction is a share of what is left, `tokens: N` is spread over the windows in proportion to
what is left there, `rest` takes the remainder and `natural` entries split it by available tokens. The targets
are exact rationals (a recipe's decimals as written); the integer tokens keep every window's total, never give
tokens to an entry whose target in a window is 0, and give each entry the floor or ceiling of its exact total
(the exact total where that is a whole number).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from alignmix.corpus.plan import PlanError
from alignmix.outputs import window_edges
from alignmix.recipe import ShareSchedule, TrainingStage


class ScheduleError(PlanError):
    """A schedule that cannot be met in some window: the message names the stage, the window and the numbers."""


@dataclass(frozen=True)
class WindowPlan:
    """One window of a scheduled stage: its stream tokens [start, end), each entry's tokens (None for a `natural`
    entry before its available tokens are known) and each entry's target share of the window."""

    start: int
    end: int
    tokens: list[int | None]
    shares: list[float]


def exact(value: float) -> Fraction:
    """A recipe number as the decimal it was written as (0.1 is 1/10, not its binary neighbour)."""
    return Fraction(repr(value))


def integral(schedule: ShareSchedule, low: Fraction, high: Fraction) -> Fraction:
    """The integral of the piecewise-linear schedule over the stage fractions [low, high]."""
    points = [(exact(f), exact(s)) for f, s in schedule.schedule]
    total = Fraction(0)
    for (f0, s0), (f1, s1) in zip(points, points[1:]):
        a, b = max(low, f0), min(high, f1)
        if f1 > f0 and b > a:
            at = lambda x: s0 + (s1 - s0) * (x - f0) / (f1 - f0)  # noqa: E731
            total += (b - a) * (at(a) + at(b)) / 2
    return total


def _window_name(stage: TrainingStage, edges: list[int], w: int) -> str:
    start, end = edges[w], edges[w + 1]
    return (f"stage '{stage.name}', window {w} (tokens {start:,} to {end:,}, {100 * start / stage.tokens:.0f}%"
            f" to {100 * end / stage.tokens:.0f}% of the stage)")


def _targets(stage: TrainingStage, names: list[str], edges: list[int], weights: list[float] | None
             ) -> list[list[Fraction]]:
    """Exact tokens per window (rows) and entry (columns): scheduled entries first, then the others in what is
    left; the `natural` entries as one column (the last) where `weights` are not known yet."""
    mixture = stage.mixture
    scheduled = [i for i, e in enumerate(mixture) if isinstance(e.share, ShareSchedule)]
    fixed = [i for i, e in enumerate(mixture) if i not in scheduled and e.share not in ("rest", "natural")]
    left = [i for i, e in enumerate(mixture) if e.share in ("rest", "natural")]
    total = Fraction(stage.tokens)
    rows, leftover = [], []
    for w in range(len(edges) - 1):
        size = Fraction(edges[w + 1] - edges[w])
        row = [Fraction(0)] * len(mixture)
        for i in scheduled:
            row[i] = total * integral(mixture[i].share, edges[w] / total, edges[w + 1] / total)  # type: ignore[arg-type]
        taken = sum(row)
        if taken > size:
            shares = ", ".join(f"{names[i]} {float(row[i] / size):.4f}" for i in scheduled)
            raise ScheduleError(f"{_window_name(stage, edges, w)}: the scheduled shares add up to"
                                f" {float(taken / size):.4f} ({shares}); they must not exceed 1")
        if taken < size and not (fixed or left):
            raise ScheduleError(f"{_window_name(stage, edges, w)}: the scheduled shares add up to"
                                f" {float(taken / size):.4f} and no other entry fills the rest of the window")
        rows.append(row)
        leftover.append(size - taken)
    left_total = sum(leftover)
    if left_total == 0 and any(mixture[i].tokens for i in fixed):
        raise ScheduleError(f"stage '{stage.name}': the schedules fill every window, which leaves nothing for the"
                            " entries with `tokens`")
    fractions = {i: exact(mixture[i].share) if mixture[i].tokens is None else Fraction(mixture[i].tokens, 1)
                 / (left_total or 1) for i in fixed}  # type: ignore[arg-type]
    covered = sum(fractions.values())
    if covered > 1 + Fraction(1, 10**9):
        parts = ", ".join(f"{names[i]} {mixture[i].share if mixture[i].tokens is None else f'{mixture[i].tokens:,} tokens'}"
                          for i in fixed)
        raise ScheduleError(f"stage '{stage.name}': the entries without a schedule take {float(covered):.4f} of the"
                            f" {float(left_total):,.0f} tokens the schedules leave ({parts}); they must not exceed 1")
    if fixed and not left and abs(covered - 1) > Fraction(1, 10**9):
        raise ScheduleError(f"stage '{stage.name}': the entries without a schedule cover {float(covered):.4f} of what"
                            " the schedules leave and none takes share 'rest' or 'natural'; make them add up to 1"
                            " or give one entry `share: rest`")
    scale = 1 / covered if fixed and not left else Fraction(1)  # without a `rest`, the fixed shares fill it exactly
    for row, free in zip(rows, leftover):
        for i in fixed:
            row[i] = free * fractions[i] * scale
        remainder = free - sum(row[i] for i in fixed)  # not negative: the fixed entries cover at most 1 of it
        for i, share in zip(left, _split(remainder, [1.0] if mixture[left[0]].share == "rest" else weights, left)):
            row[i] = share
    return rows


def _split(amount: Fraction, weights: list[float] | None, columns: list[int]) -> list[Fraction]:
    """`amount` split over the `rest`/`natural` columns by weight; all to the first where the weights are unknown."""
    if not columns:
        return []
    if weights is None:
        return [amount] + [Fraction(0)] * (len(columns) - 1)
    weight_sum = sum(exact(w) for w in weights)
    return [amount * exact(w) / weight_sum for w in weights]


def round_table(targets: list[list[Fraction]], row_totals: list[int]) -> list[list[int]]:
    """Integers for exact non-negative `targets` (rows summing to the integer `row_totals`): each cell the floor
    or ceiling of its target (so a zero stays zero), every row its total, and every column the floor or ceiling
    of its exact sum. A greedy pass gives each row's spare units to the columns furthest behind their exact
    running sums; any column left outside its bounds is mended along alternating paths (a unit moved between
    two columns within one row), which exist because the exact targets are themselves a solution."""
    columns = len(targets[0]) if targets else 0
    table = [[math.floor(x) for x in row] for row in targets]
    lag = [Fraction(0)] * columns
    for row, cells, total in zip(targets, table, row_totals):
        open_cells = [c for c in range(columns) if row[c] != cells[c]]
        open_cells.sort(key=lambda c: (-(lag[c] + row[c] - cells[c]), c))
        for c in open_cells[: total - sum(cells)]:
            cells[c] += 1
        for c in range(columns):
            lag[c] += row[c] - cells[c]
    exact_sums = [sum(row[c] for row in targets) for c in range(columns)]
    low, high = [math.floor(s) for s in exact_sums], [math.ceil(s) for s in exact_sums]
    sums = [sum(cells[c] for cells in table) for c in range(columns)]
    while True:
        over = [c for c in range(columns) if sums[c] > high[c]]
        under = [c for c in range(columns) if sums[c] < low[c]]
        if not over and not under:
            return table
        sources = over or [c for c in range(columns) if sums[c] > low[c]]
        wanted = (lambda c: sums[c] < high[c]) if over else (lambda c: c in under)
        path = _path(targets, table, sources, wanted)
        for row, giver, taker in path:
            table[row][giver] -= 1
            table[row][taker] += 1
        sums[path[0][1]] -= 1
        sums[path[-1][2]] += 1


def _path(targets: list[list[Fraction]], table: list[list[int]], sources: list[int], wanted
          ) -> list[tuple[int, int, int]]:
    """A shortest chain of (row, giving column, taking column) moves from a column in `sources` to a `wanted`
    one: the giver holds its cell's ceiling in that row, the taker its floor."""
    came: dict[int, tuple[int, int, int] | None] = {c: None for c in sources}
    queue = deque(sources)
    while queue:
        giver = queue.popleft()
        for r, (row, cells) in enumerate(zip(targets, table)):
            if cells[giver] <= row[giver]:
                continue
            for taker in range(len(cells)):
                if taker not in came and cells[taker] < row[taker]:
                    came[taker] = (r, giver, taker)
                    if wanted(taker):
                        path, step = [], came[taker]
                        while step is not None:
                            path.append(step)
                            step = came[step[1]]
                        return path[::-1]
                    queue.append(taker)
    raise ScheduleError("no integer plan keeps every window's and entry's total (please report this as a bug)")


def plan_windows(stage: TrainingStage, names: list[str], weights: list[float] | None) -> list[WindowPlan]:
    """A scheduled stage's windows with exact integer tokens per entry (`names` label them in errors); `weights`
    are the `natural` entries' (None while unknown: their tokens are then None)."""
    edges = window_edges(stage.tokens)
    targets = _targets(stage, names, edges, weights)
    table = round_table(targets, [b - a for a, b in zip(edges, edges[1:])])
    natural = [i for i, e in enumerate(stage.mixture) if e.share == "natural"]
    windows = []
    for w, (row, cells) in enumerate(zip(targets, table)):
        size = edges[w + 1] - edges[w]
        tokens: list[int | None] = list(cells)
        if natural and weights is None:
            for i in natural:
                tokens[i] = None
        windows.append(WindowPlan(edges[w], edges[w + 1], tokens,
                                  [float(x / size) if size else 0.0 for x in row]))
    return windows
