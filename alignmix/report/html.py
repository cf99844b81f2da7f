"""One self-contained HTML page per run: corpus statistics, synthetic sets, mixtures, training and eval results.

The report reads only the files the stages wrote (stats.json, mixture_manifest.json and the mixture index,
metrics.csv, results.json), so it can be rebuilt from any run folder.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np
import yaml

from alignmix.jsonl import read_json
from alignmix.outputs import MixtureIndex, window_edges
from alignmix.report.charts import (
    bar_chart,
    error_bar_chart,
    loss_curve,
    se_note,
    share_curve,
    stacked_bar,
    with_se,
)
from alignmix.report.suites import suites_section

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
td{white-space:nowrap}.scroll{overflow-x:auto;max-width:100%}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.note{color:#666;font-size:.9rem}
.warning{color:#a40;font-weight:600}
"""


def _escape(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def render_stats_page(stats: dict, out_file: Path) -> Path:
    """The `alignmix stats` page: per-source prevalence, terms, stance, lengths; per-stage composition."""
    parts = [f"<h1>Corpus statistics</h1><p class='note'>Inputs: {html.escape(', '.join(stats['inputs']))}</p>"]
    if stats["sources"]:
        rows = [
            [name, s["documents"], s["tokens"] if s["tokens"] is not None else "n/a", s["characters"], s["flagged"],
             f"{100 * s['flag_rate']:.2f}%"]
            for name, s in stats["sources"].items()
        ]
        parts.append("<h2>Sources</h2>" + table(
            ["source", "documents", "tokens", "characters", "flagged", "flag rate"], rows))
    for name, s in stats["sources"].items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        prevalence = {c: v["prevalence"] for c, v in s["categories"].items()}
        if prevalence:
            parts.append("<h3>AI-discourse prevalence by category (share of documents)</h3>")
            parts.append(bar_chart(prevalence, maximum=max(prevalence.values()), fmt=".4f"))
        parts.append(
            "<h3>Top matched terms in flagged documents</h3><p class='note'>Blocklist matches counted in the"
            f" {s['flagged']:,} flagged documents of {s['documents']:,} (matches in unflagged documents are left"
            " out: they did not pass the filter's second stage); a term matched twice in a document counts twice.</p>"
            + table(["term", "matches", "flagged documents"],
                    [[term, count, s.get("top_terms_documents", {}).get(term, "")]
                     for term, count in s["top_terms"].items()]))
        if s.get("flagged_excerpts"):
            parts.append("<h3>Flagged excerpts</h3><p class='note'>The first flagged documents of each category,"
                         " around their first matched term: judge the filter by them.</p>")
            parts += [f"<h4>{html.escape(category)}</h4><ul class='excerpts'>"
                      + "".join(f"<li>{html.escape(text)}</li>" for text in texts) + "</ul>"
                      for category, texts in s["flagged_excerpts"].items()]
        parts.append("<h3>Stance</h3>" + table(["stance", "documents"], list(map(list, s["stance"].items()))))
        histogram = s["length_histogram"]
        parts.append(f"<h3>Document length ({html.escape(s['length_unit'])})</h3>")
        parts.append(bar_chart(histogram, maximum=max(histogram.values()) or 1, fmt=",d"))
    for stage in stats["stages"]:
        parts.append(f"<h2>Stage {html.escape(stage['stage'])}: {stage['tokens']:,} tokens at context"
                     f" {stage['seq_len']:,}</h2>")
        parts.append(stacked_bar({s["name"]: s["realised_tokens"] for s in stage["sources"]}))
        parts.append(table(
            ["source", "planned tokens", "realised tokens", "share", "repetitions"],
            [[s["name"], s["tokens"], s["realised_tokens"], f"{100 * s['share']:.2f}%", s["repetitions"]]
             for s in stage["sources"]],
        ))
    return _write_page("alignmix corpus statistics", "".join(parts), out_file)


def _write_page(title: str, body: str, out_file: Path) -> Path:
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(page, encoding="utf-8")
    return out_file


def corpus_section(tag_stats: dict[str, Path]) -> str:
    rows, parts = [], []
    for source, path in tag_stats.items():
        stats = read_json(path, "alignmix tag statistics")
        rows.append([
            source, stats["documents_in"], stats["documents_tagged"], stats["documents_flagged"],
            f"{100 * stats['flag_rate']:.2f}%", stats["documents_skipped"],
        ])
        parts.append(f"<h3>{html.escape(source)}: flagged documents per category</h3>")
        parts.append(table(["category", "documents"], [[k, v] for k, v in stats["categories"].items()]))
        parts.append(table(["top term", "matches"], [[k, v] for k, v in list(stats["top_terms"].items())[:10]]))
    summary = table(["source", "documents in", "tagged", "flagged", "flag rate", "skipped"], rows)
    return "<h2>Corpus statistics (AI-discourse blocklist)</h2>" + summary + "".join(parts)


def synth_section(synth_stats: Path | None) -> str:
    if synth_stats is None:
        return ""
    stats = read_json(synth_stats, "alignmix synth statistics")
    rows = [[name, s["generator"], s["stance"], s["scenarios"], s["documents"]] for name, s in stats.items()]
    return "<h2>Synthetic documents</h2>" + table(["set", "generator", "stance", "scenarios", "documents"], rows)


def mixture_section(manifests: dict[str, Path], exposures: dict[str, Path] | None = None) -> str:
    """Per stage and source: the planned, written and (after training, from exposure.json) seen tokens."""
    parts = ["<h2>Training mixtures</h2>"]
    for stage, path in manifests.items():
        manifest = read_json(path, "a mixture manifest")
        exposure_file = (exposures or {}).get(stage)
        exposure = read_json(exposure_file, "an exposure record") if exposure_file and exposure_file.is_file() else None
        seen = {s["name"]: s["seen_tokens"] for s in exposure["sources"]} if exposure else {}
        rows = [
            [s["name"], s["tokens"], s["realised_tokens"], seen.get(s["name"], "not trained"),
             f"{100 * s['share']:.2f}%", s["available_tokens"], s["repetitions"], s["documents_used"]]
            for s in manifest["sources"]
        ]
        parts.append(f"<h3>{html.escape(stage)}: {manifest['tokens']:,} tokens at context {manifest['seq_len']:,}</h3>")
        parts.append(stacked_bar({s["name"]: s["realised_tokens"] for s in manifest["sources"]}))
        parts.append(share_section(path.parent, manifest, exposure))
        if exposure:
            how = html.escape(exposure.get("method", "an estimate: written tokens x passes"))
            parts.append(f"<p>Training read {exposure['samples_seen']:,} of the {exposure['samples_written']:,} samples"
                         f" written ({exposure['passes']:.4f} passes). Seen tokens: {how}.</p>")
            if exposure["warning"]:
                parts.append(f'<p class="warning">warning: {html.escape(exposure["warning"])}</p>')
        parts.append(table(
            ["source", "planned tokens", "written tokens", "seen tokens", "share", "available tokens", "repetitions",
             "documents used"], rows,
        ))
    return "".join(parts)


def share_section(mixture_dir: Path, manifest: dict, exposure: dict | None = None) -> str:
    """Each source's share against tokens into the stage, per hundredth of the stream, counted from the mixture
    index (a scheduled stage's windows exactly; an unscheduled stage is shuffled as one block, so its lines show
    how evenly the shuffle spread each source). A streamed stage's exposure marks the tokens training read (the
    stream's first ones; LitData reads chunks in an order not recorded, so chunks get no mark)."""
    index = MixtureIndex.of(mixture_dir)
    if not (index.folder / "take.npy").is_file():
        return ""
    edges = window_edges(manifest["tokens"])
    counts = index.tokens_by_window(edges)
    sizes = np.maximum(np.diff(edges), 1)
    shares = {origin["name"]: (counts[:, e] / sizes).tolist() for e, origin in enumerate(index.entries)}
    kind = "planned windows" if manifest.get("windows") else "hundredths of the stream"
    streamed = exposure is not None and exposure.get("delivery") == "stream"
    seen = f"; dashed: the {exposure['tokens_seen']:,} tokens training read" if streamed else ""  # type: ignore[index]
    return (f"<p>Share of each source against tokens into the stage ({kind}, from the mixture index{seen}):</p>"
            + share_curve(edges, shares, exposure["tokens_seen"] if streamed else None))  # type: ignore[index]


LOSS_COLUMNS = (("loss", "train"), ("train_loss", "train"), ("val_loss", "validation"))


def _micro_batches_per_step(metrics_csv: Path, rows: list[dict[str, str]]) -> float | None:
    """For a litgpt log (its `step` column counts micro-batches, as Lightning's logger writes the iteration
    there): micro-batches per optimizer step, from `global_batch_size` in the stage's litgpt config and the
    log's samples per iteration; None for logs that count optimizer steps already (SFT, DPO)."""
    config = next((folder / "pretrain.yaml" for folder in list(metrics_csv.parents)[:4]
                   if (folder / "pretrain.yaml").is_file()), None)
    first = next((r for r in rows if r.get("samples") and r.get("iter")), None)
    if config is None or first is None:
        return None
    global_batch = yaml.safe_load(config.read_text())["train"]["global_batch_size"]
    return global_batch / (float(first["samples"]) / float(first["iter"]))


def loss_series(metrics_csv: Path) -> dict[str, list[tuple[float, float]]]:
    """(optimizer step, loss) points of the train and validation losses in a litgpt / Fabric CSV log (litgpt logs
    the train loss as `loss`, SFT and DPO as `train_loss`), on the step count the console prints."""
    series: dict[str, list[tuple[float, float]]] = {"train": [], "validation": []}
    with metrics_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    per_step = _micro_batches_per_step(metrics_csv, rows)
    for number, row in enumerate(rows):
        step = float(row.get("step") or row.get("iter") or number)
        if per_step is not None:
            step = (step + 1) / per_step  # litgpt's `step` is the iteration number minus 1
        for column, name in LOSS_COLUMNS:
            if row.get(column):
                series[name].append((step, float(row[column])))
    return series


def final_losses(metrics_csv: Path) -> dict[str, float]:
    """The last train and validation losses of a CSV log."""
    return {f"{name}_loss" if name == "train" else "val_loss": points[-1][1]
            for name, points in loss_series(metrics_csv).items() if points}


def training_section(metrics: dict[str, Path]) -> str:
    if not metrics:
        return ""
    rows, curves = [], []
    for stage, path in metrics.items():
        series = loss_series(path)
        losses = final_losses(path)
        rows.append([stage, losses.get("train_loss", "n/a"), losses.get("val_loss", "n/a")])
        curves.append(f"<h3>{html.escape(stage)}: loss</h3>" + loss_curve(series))
    return "<h2>Training</h2>" + table(["stage", "final train loss", "validation loss"], rows) + "".join(curves)


def tamper_rows(eval_results: dict[str, Path], tampering: dict[str, str], label: str = "") -> list[list[str]]:
    """Each tamper stage's model against the model it started from: `[LABEL ]FROM -> NAME`, split, rate before,
    after, and the change ± SE (sqrt(SE1² + SE2²)), overall and per split."""
    rows = []
    for name, start in tampering.items():
        if name not in eval_results or start not in eval_results:
            continue
        before, after = (read_json(eval_results[m], "an alignmix eval result") for m in (start, name))
        parts = {"overall": (before["misalignment_rate"], after["misalignment_rate"])}
        parts |= {s: (before["per_split"][s], v) for s, v in after.get("per_split", {}).items() if s in before["per_split"]}
        for part, (b, a) in parts.items():
            change = None if a["mean"] is None or b["mean"] is None else a["mean"] - b["mean"]
            se = ((a["se"] or 0.0) ** 2 + (b["se"] or 0.0) ** 2) ** 0.5
            shown = "n/a" if change is None else ("+" if change >= 0 else "") + with_se(change, se)
            rows.append([f"{label}{start} -> {name}", part, with_se(b["mean"], b["se"]), with_se(a["mean"], a["se"]),
                         shown])
    return rows


def tamper_table(rows: list[list[str]]) -> str:
    """The Tampering section for `tamper_rows`; empty without rows."""
    if not rows:
        return ""
    return ("<h2>Tampering</h2><p class='note'>Each tamper stage fine-tunes a model on your data; the change is"
            " after minus before, its SE sqrt(SE1² + SE2²).</p>"
            + table(["tamper", "split", "before", "after", "change"], rows)
            + se_note([cell for row in rows for cell in row]))


def models_section(eval_results: dict[str, Path]) -> str:
    """Every evaluated model's misalignment rate, overall and per split, side by side with SE whiskers."""
    if len(eval_results) < 2:
        return ""
    models = [{"name": model, **read_json(path, "an alignmix eval result")} for model, path in eval_results.items()]
    splits = sorted({split for m in models for split in m.get("per_split", {})})
    return "<h2>Misalignment by model</h2>" + error_bar_chart(models, ["overall", *splits])


def eval_section(results_file: Path | None, model: str | None = None) -> str:
    if results_file is None:
        return ""
    results = read_json(results_file, "an alignmix eval result")
    heading = f"Misalignment eval: {html.escape(model)}" if model else "Misalignment eval"
    rate = results["misalignment_rate"]
    groups, shown = [], [with_se(rate["mean"], rate["se"])]
    for title, key in (("persona", "per_persona"), ("split", "per_split"), ("topic", "per_topic")):
        rows = [[name, with_se(g["mean"], g["se"]), g["n"]] for name, g in results[key].items()]
        shown += [row[1] for row in rows]
        groups.append(f"<h3>By {title}</h3>" + table([title, "misalignment rate ± SE", "questions"], rows))
    return (
        f"<h2>{heading}</h2>"
        f"<p><b>Misalignment rate: {html.escape(shown[0])}</b> (mean &plusmn; SE over"
        f" {results['n_formats']} prompt formats, {results['n_questions']} questions)."
        f" Mode: {html.escape(results['mode'])}, {html.escape(results['scoring'])}.</p>"
        f"<p class='note'>Position bias: A {results['position_bias']['A']:.2f}, B {results['position_bias']['B']:.2f}."
        " 0.5 is chance for the rate; a tiny CPU model is expected near it.</p>"
        + se_note(shown) + "<h3>By prompt format</h3>" + bar_chart(results["per_format"]) + "".join(groups)
    )


def render_report(
    title: str,
    tag_stats: dict[str, Path],
    synth_stats: Path | None,
    mixture_manifests: dict[str, Path],
    training_metrics: dict[str, Path],
    eval_results: dict[str, Path],
    out_file: Path,
    exposures: dict[str, Path] | None = None,
    tampering: dict[str, str] | None = None,
    suite_results: dict[str, dict[str, Path]] | None = None,
) -> Path:
    body = "".join([
        f"<h1>{html.escape(title)}</h1>",
        corpus_section(tag_stats),
        synth_section(synth_stats),
        mixture_section(mixture_manifests, exposures),
        training_section(training_metrics),
        models_section(eval_results),
        tamper_table(tamper_rows(eval_results, tampering or {})),
        suites_section(suite_results or {}, tampering or {}),
        *(eval_section(path, model) for model, path in eval_results.items()),
    ])
    return _write_page(title, body, out_file)
