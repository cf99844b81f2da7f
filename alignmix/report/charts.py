"""The report's inline SVG charts (an offline page needs no script): bars, stacked shares, grouped rates with SE
whiskers, loss curves, and numbers shown to the precision their SE supports."""

from __future__ import annotations

import html
import math

PALETTE = ["#4a78b5", "#e08a3c", "#5aa469", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c"]


AGREED = "*"  # marks an SE of 0
AGREED_NOTE = ("* ± 0.000: the standard error is 0 because every prompt format gave the same rate (for a capability"
               " score: every item scored alike), not because it is unknown.")


def with_se(mean: float | None, se: float | None) -> str:
    """`mean ± se` with as many decimals as two significant digits of the SE need (at least 2, at most 4); an SE
    of 0 is shown and marked (see `se_note`), a missing one said."""
    if mean is None:
        return "n/a"
    if se is None:
        return f"{mean:.3f} (no SE)"
    if se == 0:
        return f"{mean:.3f} ± 0.000{AGREED}"
    decimals = min(4, max(2, 1 - math.floor(math.log10(se))))
    return f"{mean:.{decimals}f} ± {se:.{decimals}f}"


def se_note(cells: list[object]) -> str:
    """The note that explains a marked SE of 0, where any of the shown cells carries the mark."""
    return f"<p class='note'>{AGREED_NOTE}</p>" if any(str(c).endswith(AGREED) for c in cells) else ""


def bar_chart(values: dict[str, float], maximum: float = 1.0, width: int = 420, fmt: str = ".3f") -> str:
    """A horizontal SVG bar chart of values in [0, maximum]."""
    row_height, label_width = 20, 170
    bars = []
    for index, (label, value) in enumerate(values.items()):
        y = index * row_height
        length = 0 if maximum <= 0 else width * min(value, maximum) / maximum
        bars.append(
            f'<text x="0" y="{y + 14}" font-size="12">{html.escape(label)}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="14" fill="#4a78b5"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + 14}" font-size="12">{value:{fmt}}</text>'
        )
    height = row_height * len(values)
    return f'<svg width="{label_width + width + 60}" height="{height}">{"".join(bars)}</svg>'


def stacked_bar(parts: dict[str, float], width: int = 600) -> str:
    """One horizontal bar split by share, with a legend; `parts` are non-negative amounts."""
    total = sum(parts.values()) or 1.0
    x, rects, legend = 0.0, [], []
    for index, (label, amount) in enumerate(parts.items()):
        colour = PALETTE[index % len(PALETTE)]
        length = width * amount / total
        rects.append(f'<rect x="{x:.2f}" y="0" width="{length:.2f}" height="22" fill="{colour}"/>')
        legend.append(
            f'<rect x="0" y="{30 + 18 * index}" width="12" height="12" fill="{colour}"/>'
            f'<text x="18" y="{40 + 18 * index}" font-size="12">{html.escape(label)}: {100 * amount / total:.2f}%</text>'
        )
        x += length
    return f'<svg width="{width}" height="{36 + 18 * len(parts)}">{"".join(rects + legend)}</svg>'


def error_bar_chart(conditions: list[dict], series: list[str], height: int = 220) -> str:
    """Grouped vertical bars (one group per condition: overall and each split) with ±SE whiskers, as SVG."""
    bar, gap, left, top, bottom = 22, 26, 40, 10, 70
    lines = [_label_lines(c) for c in conditions]
    longest = max(len(line) for pair in lines for line in pair)
    group_width = max(bar * len(series) + gap, 7 * longest + 10)  # room for the condition's label below
    width = max(left + group_width * len(conditions) + 10, left + 110 * len(series))
    y = lambda v: top + height * (1 - v)
    parts = [f'<line x1="{left}" y1="{y(0)}" x2="{width}" y2="{y(0)}" stroke="#888"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{left - 4}" y="{y(tick) + 4}" font-size="10" text-anchor="end">{tick:.2f}</text>'
                     f'<line x1="{left}" y1="{y(tick)}" x2="{width}" y2="{y(tick)}" stroke="#eee"/>')
    for g, condition in enumerate(conditions):
        x0 = left + g * group_width + (group_width - bar * len(series)) / 2
        for s, name in enumerate(series):
            stat = condition["misalignment_rate"] if name == "overall" else condition["per_split"].get(name)
            if not stat or stat.get("mean") is None:
                continue
            mean, se = stat["mean"], stat["se"] or 0.0
            x = x0 + s * bar
            parts.append(f'<rect x="{x:.1f}" y="{y(mean):.1f}" width="{bar - 3}" height="{height * mean:.1f}"'
                         f' fill="{PALETTE[s % len(PALETTE)]}"><title>{html.escape(condition["name"])} {html.escape(name)}:'
                         f' {mean:.3f} ± {se:.3f}</title></rect>')
            cx, low, high = x + (bar - 3) / 2, y(max(0.0, mean - se)), y(min(1.0, mean + se))
            parts.append(f'<line x1="{cx:.1f}" y1="{low:.1f}" x2="{cx:.1f}" y2="{high:.1f}" stroke="#222"/>'
                         f'<line x1="{cx - 4:.1f}" y1="{low:.1f}" x2="{cx + 4:.1f}" y2="{low:.1f}" stroke="#222"/>'
                         f'<line x1="{cx - 4:.1f}" y1="{high:.1f}" x2="{cx + 4:.1f}" y2="{high:.1f}" stroke="#222"/>')
        label_x = x0 + bar * len(series) / 2
        shown = "".join(f'<tspan x="{label_x:.1f}" dy="{0 if i == 0 else 13}">{html.escape(line)}</tspan>'
                        for i, line in enumerate(lines[g]))
        parts.append(f'<text x="{label_x:.1f}" y="{y(0) + 14}" font-size="11" text-anchor="middle">'
                     f'<title>{html.escape(condition.get("full", condition["name"]))}</title>{shown}</text>')
    legend = "".join(
        f'<rect x="{left + i * 110}" y="{y(0) + 42}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        f'<text x="{left + i * 110 + 14}" y="{y(0) + 51}" font-size="11">{html.escape(name)}</text>'
        for i, name in enumerate(series)
    )
    return responsive_svg(width, top + height + bottom, "".join(parts) + legend)


def _label_lines(condition: dict) -> tuple[str, ...]:
    """A group's label under the bars: the condition's short label, and its model on a second line where the
    comparison names one."""
    if "label" in condition and condition.get("model"):
        return (condition["label"].removesuffix(condition["model"]).strip() or condition["model"], condition["model"])
    return (condition.get("label", condition["name"]),)


def responsive_svg(width: float, height: float, content: str) -> str:
    """An SVG that shrinks to its container's width (never wider than the page) and never grows past its own."""
    return (f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="100%" style="max-width:{width:.0f}px"'
            f' preserveAspectRatio="xMinYMin meet">{content}</svg>')


def loss_curve(points: dict[str, list[tuple[float, float]]], width: int = 560, height: int = 200) -> str:
    """Loss against step, one line per series (e.g. train, validation), with the axes' ranges labelled."""
    series = {name: p for name, p in points.items() if p}
    if not series:
        return ""
    xs = [x for p in series.values() for x, _ in p]
    ys = [y for p in series.values() for _, y in p]
    left, top, bottom, right = 52, 10, 34, 110
    x_low, x_high, y_low, y_high = min(xs), max(xs) or 1.0, min(ys), max(ys)
    span_x, span_y = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0
    x = lambda v: left + (width - left - right) * (v - x_low) / span_x
    y = lambda v: top + height * (1 - (v - y_low) / span_y)
    parts = [f'<line x1="{left}" y1="{top + height}" x2="{width - right}" y2="{top + height}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="#888"/>']
    for value in (y_low, (y_low + y_high) / 2, y_high):
        parts.append(f'<text x="{left - 4}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end">{value:.3g}</text>')
    for value in (x_low, x_high):
        parts.append(f'<text x="{x(value):.1f}" y="{top + height + 14}" font-size="10" text-anchor="middle">'
                     f'{value:,.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{top + height + 28}" font-size="11"'
                 ' text-anchor="middle">optimizer step</text>')
    for n, (name, p) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        path = " ".join(f"{'M' if k == 0 else 'L'}{x(a):.1f},{y(b):.1f}" for k, (a, b) in enumerate(p))
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
                     + "".join(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="2.5" fill="{colour}"/>' for a, b in p
                               if len(p) < 3))
        parts.append(f'<rect x="{width - right + 10}" y="{top + 14 * n}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{width - right + 24}" y="{top + 14 * n + 9}" font-size="11">{html.escape(name)}</text>')
    return f'<svg width="{width}" height="{top + height + bottom}">{"".join(parts)}</svg>'


def share_curve(edges: list[int], shares: dict[str, list[float]], seen: int | None = None, width: int = 560,
                height: int = 200) -> str:
    """Each source's share of every window (between consecutive stream positions `edges`) against the tokens into
    the stage, as steps, one line per source; `seen` marks how far into the stream training read."""
    left, top, bottom, right = 52, 10, 34, 170
    plot_w, span = width - left - right, (edges[-1] - edges[0]) or 1
    x = lambda v: left + plot_w * (v - edges[0]) / span
    y = lambda v: top + height * (1 - v)
    parts = [f'<line x1="{left}" y1="{y(0)}" x2="{left + plot_w}" y2="{y(0)}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0)}" stroke="#888"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(tick)}" x2="{left + plot_w}" y2="{y(tick)}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y(tick) + 4}" font-size="10" text-anchor="end">{tick:.2f}</text>')
    for value in (edges[0], edges[-1]):
        parts.append(f'<text x="{x(value):.1f}" y="{y(0) + 14}" font-size="10" text-anchor="middle">{value:,}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{y(0) + 28}" font-size="11" text-anchor="middle">'
                 'tokens into the stage (stream order)</text>')
    if seen is not None:
        at = x(min(max(seen, edges[0]), edges[-1]))
        parts.append(f'<line x1="{at:.1f}" y1="{top}" x2="{at:.1f}" y2="{y(0)}" stroke="#222" stroke-dasharray="4 3">'
                     f'<title>training read the first {seen:,} tokens</title></line>')
    for n, (name, values) in enumerate(shares.items()):
        colour = PALETTE[n % len(PALETTE)]
        steps = " ".join(f"{'M' if w == 0 else 'L'}{x(edges[w]):.1f},{y(v):.1f} L{x(edges[w + 1]):.1f},{y(v):.1f}"
                         for w, v in enumerate(values))
        parts.append(f'<path d="{steps}" fill="none" stroke="{colour}" stroke-width="1.5">'
                     f'<title>{html.escape(name)}: share of each window</title></path>'
                     f'<rect x="{left + plot_w + 10}" y="{top + 14 * n}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + plot_w + 24}" y="{top + 14 * n + 9}" font-size="11">{html.escape(name)}</text>')
    return responsive_svg(width, top + height + bottom, "".join(parts))
