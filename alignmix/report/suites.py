"""Report sections for the eval suites beyond the scenario questions (`em`, `personality`).

Each suite's results.json carries a `headline`: {metric: {mean, se}} (the EM rate; the high-keyed share per
trait). The run report shows every model's headline and, for each tamper stage, before, after and change ± SE
(sqrt(SE1² + SE2²)) per metric; the comparison page does the same across runs, and a sweep plots the EM rate
against the swept value. An EM judge flagged for parse failures, and the judges' agreement, are shown beside.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from alignmix.outputs import RESULTS_FILE
from alignmix.report.charts import AGREED, with_se

SUITES = {"em": "Emergent misalignment (free-form questions, LLM judge)",
          "personality": "Personality (TRAIT-style items, share of high-keyed choices)"}


def suite_results_of_run(run_dir: Path) -> dict[str, dict[str, Path]]:
    """{suite: {model: results.json}} from a run folder's `eval-<suite>/<model>/`."""
    return {suite: found for suite in SUITES
            if (found := {p.parent.name: p for p in sorted((run_dir / f"eval-{suite}").glob(f"*/{RESULTS_FILE}"))})}


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _signed(after: dict, before: dict) -> str:
    if after.get("mean") is None or before.get("mean") is None:
        return "n/a"
    change = after["mean"] - before["mean"]
    se = ((after.get("se") or 0.0) ** 2 + (before.get("se") or 0.0) ** 2) ** 0.5
    return ("+" if change >= 0 else "") + with_se(change, se)


SUITE_AGREED_NOTE = (f"{AGREED} ± 0.000: the standard error is 0 because every question (EM) or every prompt format"
                     " (personality) gave the same score, not because it is unknown.")


def suite_tamper_rows(results: dict[str, Path], tampering: dict[str, str], label: str = "") -> list[list[str]]:
    """For each tamper stage with both models evaluated: `[LABEL ]FROM -> NAME`, metric, before, after, change."""
    rows = []
    for name, start in tampering.items():
        if name not in results or start not in results:
            continue
        before, after = (json.loads(results[m].read_text())["headline"] for m in (start, name))
        for metric, value in after.items():
            if metric in before:
                rows.append([f"{label}{start} -> {name}", metric, with_se(before[metric]["mean"], before[metric]["se"]),
                             with_se(value["mean"], value["se"]), _signed(value, before[metric])])
    return rows


def _em_details(model: str, results: dict) -> list[str]:
    notes = [f"{model}: judge {results['judge']}, incoherent {results['incoherent_rate']:.1%}, judge refused"
             f" {results['refusal_rate']:.1%}, unparseable {results['unparseable_rate']:.1%}"]
    for name, judge in results["judges"].items():
        flag = " — FLAGGED: over 10% of its requests gave no score" if judge["flagged"] else ""
        rate = judge["em_rate"]
        notes.append(f"{model}: judge {name} EM rate {with_se(rate['mean'], rate['se'])}, parse failures"
                     f" {judge['parse_failure_rate']:.1%}{flag}")
    for pair, value in results["agreement"]["kappa"].items():
        kappa = "n/a" if value["kappa"] is None else f"{value['kappa']:.2f}"
        notes.append(f"{model}: {pair}: Cohen's kappa {kappa} over {value['n']} answers")
    for name, value in results["agreement"].get("human_accuracy", {}).items():
        shown = "n/a" if value["accuracy"] is None else f"{value['accuracy']:.1%}"
        notes.append(f"{model}: judge {name} accuracy against human labels {shown} over {value['n']} answers")
    return notes


def suites_section(suite_results: dict[str, dict[str, Path]], tampering: dict[str, str]) -> str:
    """Per suite: every model's headline metrics ± SE, the tamper changes, and (EM) the judges' quality."""
    parts = []
    for suite, results in suite_results.items():
        if not results:
            continue
        loaded = {model: json.loads(path.read_text()) for model, path in results.items()}
        metrics = list(dict.fromkeys(m for r in loaded.values() for m in r["headline"]))
        rows = [[model] + [with_se(r["headline"][m]["mean"], r["headline"][m]["se"]) if m in r["headline"] else "n/a"
                           for m in metrics] for model, r in loaded.items()]
        parts.append(f"<h2>{html.escape(SUITES[suite])}</h2>" + _table(["model", *metrics], rows))
        tamper = suite_tamper_rows(results, tampering)
        if tamper:
            parts.append("<h3>Tampering</h3>" + _table(["tamper", "metric", "before", "after", "change"], tamper))
        if suite == "em":
            notes = [n for model, r in loaded.items() for n in _em_details(model, r)]
            warnings = [f"{model}: {r['warning']}" for model, r in loaded.items() if r.get("warning")]
            parts.append("".join(f"<p class='warning'>{html.escape(w)}</p>" for w in warnings)
                         + "<ul class='note'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if any(f"{AGREED}<" in part for part in parts):
        parts.append(f"<p class='note'>{html.escape(SUITE_AGREED_NOTE)}</p>")
    return "".join(parts)


def suite_tampering_of_runs(paths: list[Path]) -> str:
    """The comparison page's per-suite tamper sections over several run folders (empty without any)."""
    parts = []
    for suite, title in SUITES.items():
        rows = []
        for path in paths:
            manifest = path / "manifest.json"
            results = suite_results_of_run(path).get(suite, {})
            if not manifest.is_file() or not results:
                continue
            stages = json.loads(manifest.read_text())["stages"]
            tampering = {s["name"]: s["depends_on"][0] for s in stages if "tamper" in s.get("settings", {})}
            rows += suite_tamper_rows(results, tampering, f"{path.name}: ")
        if rows:
            parts.append(f"<h2>Tampering: {html.escape(title)}</h2>"
                         + _table(["tamper", "metric", "before", "after", "change"], rows))
    return "".join(parts)


def em_dose_records(records: list[dict]) -> list[dict]:
    """A sweep's records with each run's EM rates in place of the scenario results, shaped for
    `report.dose.dose_response_svg` (one line per evaluated model); empty where no run has EM results."""
    converted = []
    for record in records:
        em = suite_results_of_run(Path(record["run_dir"])).get("em", {})
        results = {model: {"misalignment_rate": json.loads(path.read_text())["em_rate"]} for model, path in em.items()}
        if results:
            converted.append({**record, "results": results})
    return converted
