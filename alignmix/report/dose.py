"""A dose-response plot for a sweep: misalignment rate ± SE against the swept value, one line per evaluated model
and split, as inline SVG (an offline page needs no script)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import yaml

from alignmix.report.charts import PALETTE


def value_label(value: Any) -> str:
    """A swept value as the recipe writes it: `0.01`, `[none, hhh]`, `{flagged: false}`, `{}`; a share schedule
    briefly (`schedule_label`)."""
    if isinstance(value, dict) and set(value) == {"schedule"} and isinstance(value["schedule"], list):
        return schedule_label(value["schedule"])
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def schedule_label(points: list[list[float]]) -> str:
    """A share schedule in a few words: `0.05 throughout`, `0.5, last 10%` (none before a step to a constant
    share), else its points as `fraction:share`."""
    shares = [s for _, s in points]
    if len(set(shares)) == 1:
        return f"{shares[0]:g} throughout"
    if len(points) == 4 and shares[:2] == [0, 0] and shares[2] == shares[3] and points[1][0] == points[2][0]:
        return f"{shares[2]:g}, last {1 - points[1][0]:.0%}"
    return " ".join(f"{f:g}:{s:g}" for f, s in points)


def condition_names(records: list[dict], longest: int = 18) -> dict[str, tuple[str, str]]:
    """Each sweep condition's short label (its swept values, or `#N` where they are long) and full description
    (its overrides), by its folder name, for the comparison page."""
    names = {}
    for number, record in enumerate(records, start=1):
        short = ", ".join(value_label(value) for value in record["values"].values())
        names[Path(record["run_dir"]).name] = (short if len(short) <= longest else f"#{number}",
                                               " ".join(record["overrides"]))
    return names


def dose_series(records: list[dict], key: str) -> tuple[list[str], dict[str, list[tuple[int, float, float]]]]:
    """The swept values (in sweep order, as labels: a value may be a number, a list or a mapping) and, per
    `model split` line, (value index, mean, se) points."""
    values = list(dict.fromkeys(value_label(record["values"][key]) for record in records))
    lines: dict[str, list[tuple[int, float, float]]] = {}
    for record in records:
        x = values.index(value_label(record["values"][key]))
        for model, results in record["results"].items():
            rows = {"overall": results["misalignment_rate"], **results.get("per_split", {})}
            for split, stat in rows.items():
                if stat.get("mean") is not None:
                    lines.setdefault(f"{model} {split}", []).append((x, stat["mean"], stat.get("se") or 0.0))
    return values, lines


def dose_response_svg(records: list[dict], key: str, width: int = 640, height: int = 260) -> str:
    """Rate ± SE (whiskers) against the values of `key`, evenly spaced in sweep order, one line per model/split."""
    values, lines = dose_series(records, key)
    left, right, top, bottom = 48, 170, 12, 46
    plot_w = width - left - right
    x = lambda i: left + (plot_w * i / (len(values) - 1) if len(values) > 1 else plot_w / 2)
    y = lambda v: top + height * (1 - v)
    parts = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(tick)}" x2="{left + plot_w}" y2="{y(tick)}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y(tick) + 4}" font-size="10" text-anchor="end">{tick:.2f}</text>')
    for i, value in enumerate(values):
        parts.append(f'<text x="{x(i):.1f}" y="{y(0) + 16}" font-size="11" text-anchor="middle">'
                     f'{html.escape(str(value))}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{y(0) + 34}" font-size="11" text-anchor="middle">'
                 f'{html.escape(key)}</text>')
    for n, (name, points) in enumerate(sorted(lines.items())):
        colour = PALETTE[n % len(PALETTE)]
        path = " ".join(f"{'M' if k == 0 else 'L'}{x(i):.1f},{y(mean):.1f}" for k, (i, mean, _) in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, mean, se in points:
            cx, low, high = x(i), y(max(0.0, mean - se)), y(min(1.0, mean + se))
            parts.append(f'<line x1="{cx:.1f}" y1="{low:.1f}" x2="{cx:.1f}" y2="{high:.1f}" stroke="{colour}"/>'
                         f'<circle cx="{cx:.1f}" cy="{y(mean):.1f}" r="3" fill="{colour}">'
                         f'<title>{html.escape(name)} at {html.escape(str(values[i]))}: {mean:.3f} ± {se:.3f}</title>'
                         f'</circle>')
        parts.append(f'<rect x="{left + plot_w + 12}" y="{top + 14 * n}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + plot_w + 26}" y="{top + 14 * n + 9}" font-size="11">{html.escape(name)}</text>')
    return f'<svg width="{width}" height="{top + height + bottom}">{"".join(parts)}</svg>'
