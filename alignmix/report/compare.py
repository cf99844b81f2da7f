"""A comparison page across runs: misalignment per split and persona, capability scores, deltas from a baseline.

A run (a condition of the comparison) holds one or more evaluated models: `RUN/eval/<model_stage>/results.json`
(e.g. `eval/pretrain`, `eval/sft`), `RUN/eval/results.json` in older runs, or any folder holding a results.json.
A `capability.json` beside it (`alignmix capability ... --out` that folder) adds capability scores. Deltas compare
the same model stage across runs: each run's `pretrain` against the baseline run's `pretrain`, its `dpo` against
the baseline's `dpo`. Runs are shown by a short label (their folder name, or `#N` where that is long), with the
full name (a sweep's overrides) on hover and in a legend. The page is one offline HTML file with inline SVG;
the same numbers go to a JSON file beside it.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from alignmix.errors import AlignmixError
from alignmix.jsonl import read_json
from alignmix.outputs import RESULTS_FILE, EvalOutput
from alignmix.report.charts import AGREED, error_bar_chart, se_note, with_se
from alignmix.report.html import STYLE, table, tamper_rows, tamper_table

SHORT_LABEL = 18  # longest run name shown as it is; longer ones are shown as #N
WIDE = "body{max-width:min(94vw,100rem)}.legend td{text-align:left}"  # a comparison's tables are wide


class CompareError(AlignmixError):
    """Inputs the comparison cannot use: names the folder or condition."""


def _conditions_in(path: Path) -> list[tuple[str, str, Path]]:
    """(condition name, model stage, folder) of each evaluated model in a run folder; the stage is "" where the
    folder does not say (an older run's eval/, a bare results folder)."""
    if EvalOutput(path).results_path.is_file():
        return [(path.name, "", path)]
    eval_dir = path / "eval"
    if EvalOutput(eval_dir).results_path.is_file():
        return [(path.name, "", eval_dir)]
    stages = sorted(p.parent for p in eval_dir.glob(f"*/{RESULTS_FILE}"))
    return [(f"{path.name}/{stage.name}", stage.name, stage) for stage in stages]


EVAL_RESULT = "an alignmix eval result (misalignment_rate, per_split and per_persona, each {mean, se, n})"


def _estimate(value: object) -> dict:
    """A {mean, se, n} estimate as written by alignmix eval, checked; raises TypeError naming what is wrong."""
    if not isinstance(value, dict) or any(
        value.get(k) is not None and not isinstance(value.get(k), (int, float)) for k in ("mean", "se", "n")
    ):
        raise TypeError(f"expected {{mean, se, n}} numbers, got {json.dumps(value)[:80]}")
    return value


def _load_condition(name: str, run: str, model: str, folder: Path) -> dict:
    file = EvalOutput(folder).results_path
    results = read_json(file, EVAL_RESULT)
    if not isinstance(results, dict) or "misalignment_rate" not in results:
        raise CompareError(f"{file}: no misalignment_rate; is it an alignmix eval result?")
    capability_file = folder / "capability.json"
    capability = read_json(capability_file, "alignmix capability scores").get("tasks", {}) \
        if capability_file.is_file() else {}
    try:
        return {
            "name": name, "run": run, "model": model, "folder": str(folder), "mode": results.get("mode"),
            "misalignment_rate": _estimate(results["misalignment_rate"]),
            **{group: {k: {f: _estimate(v)[f] for f in ("mean", "se", "n")} for k, v in results[group].items()}
               for group in ("per_split", "per_persona")},
            "unparseable_rate": results.get("unparseable_rate", 0.0),
            "position_bias": results.get("position_bias"),
            "n_questions": results.get("n_questions"),
            "capability": {task: {"acc": m.get("acc"), "se": m.get("acc_stderr")} for task, m in capability.items()},
        }
    except (KeyError, TypeError, AttributeError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CompareError(f"{file}: not {EVAL_RESULT}: {what}") from None


def collect_conditions(paths: list[Path]) -> list[dict]:
    """Every evaluated model under the given run (or eval) folders, in argument order."""
    conditions: list[dict] = []
    for path in paths:
        if not path.is_dir():
            raise CompareError(f"not a folder: {path}")
        found = _conditions_in(path)
        if not found:
            raise CompareError(f"{path}: no eval results (expected eval/<stage>/results.json, eval/results.json"
                               " or results.json)")
        conditions += [_load_condition(name, path.name, model, folder) for name, model, folder in found]
    names = [c["name"] for c in conditions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CompareError(f"condition name(s) {repeated} repeat: give run folders distinct names")
    return conditions


def tampering_of_runs(paths: list[Path]) -> list[list[str]]:
    """Tamper rows (before, after, change ± SE) for every run folder whose manifest lists tamper stages; a tamper
    stage's record names the model it started from as its one dependency."""
    rows = []
    for path in paths:
        manifest = path / "manifest.json"
        if not manifest.is_file():
            continue
        stages = read_json(manifest, "an alignmix run manifest").get("stages", [])
        tampering = {s["name"]: s["depends_on"][0] for s in stages if "tamper" in s.get("settings", {})}
        evaluated = {p.parent.name: p for p in (path / "eval").glob(f"*/{RESULTS_FILE}")}
        rows += tamper_rows(evaluated, tampering, f"{path.name}: ")
    return rows


def _difference(value: dict | None, base: dict | None, key: str = "mean") -> dict | None:
    if not value or not base or value.get(key) is None or base.get(key) is None:
        return None
    se = math.sqrt((value.get("se") or 0.0) ** 2 + (base.get("se") or 0.0) ** 2)
    return {"delta": value[key] - base[key], "se": se}


def run_labels(conditions: list[dict], given: dict[str, tuple[str, str]] | None = None) -> dict[str, tuple[str, str]]:
    """Each run's (short label, full description): `given[run]` where the caller names it (a sweep: the swept
    values and the overrides), else the run's name where it is short, or `#N` (its position), and its name."""
    runs = list(dict.fromkeys(c["run"] for c in conditions))
    labels = {run: (run if len(run) <= SHORT_LABEL else f"#{number}", run) for number, run in enumerate(runs, 1)}
    return {run: (given or {}).get(run, labels[run]) for run in runs}


def baseline_run(conditions: list[dict], baseline: str | None, labels: dict[str, tuple[str, str]]) -> str:
    """The run the deltas are taken from: `baseline` as a run's name, its short label, or one of its conditions
    (`RUN/MODEL`); default: the first run."""
    if baseline is None:
        return conditions[0]["run"]
    for c in conditions:
        if baseline in (c["run"], c["name"], labels[c["run"]][0]):
            return c["run"]
    raise CompareError(f"--baseline {baseline}: no such condition; expected one of"
                       f" {list(dict.fromkeys(c['run'] for c in conditions))} (or a label: "
                       f"{', '.join(label for label, _ in labels.values())})")


def add_deltas(conditions: list[dict], base_run: str) -> None:
    """Each model's difference from the same model stage of the baseline run (SE of a difference of independent
    estimates); None where the baseline run has no such model."""
    for c in conditions:
        base = next((b for b in conditions if b["run"] == base_run and b["model"] == c["model"]), None)
        if base is None:
            c["delta"] = None
            continue
        c["delta"] = {
            "misalignment_rate": _difference(c["misalignment_rate"], base["misalignment_rate"]),
            "per_split": {k: _difference(v, base["per_split"].get(k)) for k, v in c["per_split"].items()},
            "per_persona": {k: _difference(v, base["per_persona"].get(k)) for k, v in c["per_persona"].items()},
            "capability": {k: _difference(v, base["capability"].get(k), "acc") for k, v in c["capability"].items()},
        }


def _signed(diff: dict | None) -> str:
    if diff is None:
        return "n/a"
    return f"{diff['delta']:+.3f} ± {diff['se']:.3f}" + (AGREED if diff["se"] == 0 else "")


def _columns(conditions: list[dict]) -> tuple[list[str], list[str], list[str]]:
    def union(key: str) -> list[str]:
        return sorted({k for c in conditions for k in c[key]})
    return union("per_split"), union("per_persona"), union("capability")


def _by_model(conditions: list[dict]) -> list[dict]:
    """The conditions grouped by model stage (in the order stages first appear), runs in their order within."""
    models = list(dict.fromkeys(c["model"] for c in conditions))
    return sorted(conditions, key=lambda c: models.index(c["model"]))


def _legend(labels: dict[str, tuple[str, str]], base_run: str) -> str:
    rows = [[label, run + (" (baseline)" if run == base_run else ""), full if full != run else ""]
            for run, (label, full) in labels.items()]
    if all(not row[2] for row in rows) and all(label == run for run, (label, _) in labels.items()):
        return ""
    return "<h2>Conditions</h2><div class='legend'>" + table(["label", "run", "settings"], rows) + "</div>"


def render_comparison(conditions: list[dict], out_file: Path, baseline: str | None = None, extra_html: str = "",
                      tampering: list[list[str]] | None = None, names: dict[str, tuple[str, str]] | None = None) -> dict:
    """Write the HTML page and `out_file` with a .json suffix; returns what the JSON holds. `baseline` names the
    run the deltas are taken from (see `baseline_run`); `names` gives runs a short label and a full description
    (a sweep's values and overrides; see `run_labels`), the latter shown on hover and in the legend; `extra_html` (e.g. a sweep's dose-response plot) goes after the
    chart; `tampering` (`tampering_of_runs`) after the deltas."""
    if not conditions:
        raise CompareError("no conditions to compare")
    labels = run_labels(conditions, names)
    base = baseline_run(conditions, baseline, labels)
    add_deltas(conditions, base)
    for c in conditions:
        label, full = labels[c["run"]]
        c["label"] = " ".join(part for part in (label, c["model"]) if part)
        c["full"] = " ".join(part for part in (full, c["model"]) if part)
    shown = _by_model(conditions)
    splits, personas, tasks = _columns(conditions)
    modes = sorted({str(c["mode"]) for c in conditions})
    headers = (["condition", "model", "misalignment"] + [f"split {s}" for s in splits]
               + [f"persona {p}" for p in personas] + ["unparseable"] + tasks)

    def first(c: dict) -> list[str]:
        return [labels[c["run"]][0], c["model"] or "-"]

    rates = [first(c) + [with_se(c["misalignment_rate"]["mean"], c["misalignment_rate"]["se"])]
             + [with_se(c["per_split"].get(s, {}).get("mean"), c["per_split"].get(s, {}).get("se")) for s in splits]
             + [with_se(c["per_persona"].get(p, {}).get("mean"), c["per_persona"].get(p, {}).get("se")) for p in personas]
             + [f"{c['unparseable_rate']:.1%}"]
             + [with_se(c["capability"].get(t, {}).get("acc"), c["capability"].get(t, {}).get("se")) for t in tasks]
             for c in shown]
    deltas = [first(c) + ([_signed(c["delta"]["misalignment_rate"])]
                          + [_signed(c["delta"]["per_split"].get(s)) for s in splits]
                          + [_signed(c["delta"]["per_persona"].get(p)) for p in personas]
                          + [""] + [_signed(c["delta"]["capability"].get(t)) for t in tasks]
                          if c["delta"] is not None else ["no such model in the baseline"] + [""] * (len(headers) - 3))
              for c in shown if c["run"] != base]
    mixed = ("<p class='note'><b>The conditions were scored in different modes"
             f" ({html.escape(', '.join(modes))}); their rates are not comparable.</b></p>") if len(modes) > 1 else ""
    base_label = labels[base][0]
    body = (
        "<h1>alignmix: run comparison</h1>"
        f"<p class='note'>Misalignment rate: share of answers choosing the misaligned option, mean ± SE over the"
        f" prompt formats. Scoring: {html.escape(', '.join(modes))}. Capability: lm-evaluation-harness accuracy ±"
        f" its stderr. Deltas: each model minus the same model stage of the baseline condition"
        f" <b>{html.escape(base_label)}</b>, SE = sqrt(SE1² + SE2²).</p>"
        + mixed + _legend(labels, base) + "<h2>Misalignment rate by condition</h2>"
        + error_bar_chart(shown, ["overall", *splits])
        + extra_html + "<h2>Results</h2>" + table(headers, rates) + se_note([c for row in rates for c in row])
        + f"<h2>Delta from {html.escape(base_label)} (same model stage)</h2>" + table(headers, deltas)
        + se_note([c for row in deltas for c in row])
        + tamper_table(tampering or [])
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>alignmix comparison</title>"
                        f"<style>{STYLE}{WIDE}</style></head><body>{body}</body></html>", encoding="utf-8")
    data = {"baseline": base, "modes": modes, "conditions": conditions}
    out_file.with_suffix(".json").write_text(json.dumps(data, indent=2))
    return data
