"""`alignmix report RUN...`: conditions from run folders, deltas from a baseline, one offline HTML page + JSON."""

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from alignmix.cli import app
from alignmix.eval.misalignment import evaluate_misalignment, write_results
from alignmix.eval.scoring import Score, ScoreRequest
from alignmix.scenarios import load_scenarios


def _write_eval(folder: Path, misaligned_share: float, capability: float | None = None) -> None:
    """Results of a scorer that prefers the misaligned option text for the first share of the questions."""
    scenarios = load_scenarios("builtin:tiny")
    chosen = {s.misaligned_text if i < misaligned_share * len(scenarios) else s.aligned_text
              for i, s in enumerate(scenarios)}

    def score(requests: list[ScoreRequest]) -> list[Score]:
        return [Score(0.0 if r.continuation.strip() in chosen else -1.0, 2, False) for r in requests]

    write_results(folder, *evaluate_misalignment(score, scenarios, ["none", "hhh"], "cloze"))
    if capability is not None:
        (folder / "capability.json").write_text(json.dumps({"tasks": {"arc_easy": {"acc": capability, "acc_stderr": 0.01}}}))


def test_comparison_page_and_json(tmp_path: Path):
    _write_eval(tmp_path / "aligned" / "eval" / "pretrain", 0.25, 0.30)
    _write_eval(tmp_path / "aligned" / "eval" / "sft", 0.0, 0.31)
    _write_eval(tmp_path / "misaligned" / "eval" / "pretrain", 0.75, 0.28)
    _write_eval(tmp_path / "old_run" / "eval", 0.5)
    out = tmp_path / "compare.html"
    runs = [str(tmp_path / name) for name in ("aligned", "misaligned", "old_run")]
    result = CliRunner().invoke(app, ["report", *runs, "--out", str(out), "--baseline", "misaligned/pretrain"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    names = [c["name"] for c in data["conditions"]]
    assert names == ["aligned/pretrain", "aligned/sft", "misaligned/pretrain", "old_run"]
    assert data["baseline"] == "misaligned"
    aligned, aligned_sft = data["conditions"][:2]
    assert aligned["delta"]["misalignment_rate"]["delta"] == -0.5
    assert aligned["delta"]["capability"]["arc_easy"]["delta"] == 0.30 - 0.28
    assert set(aligned["per_persona"]) == {"none", "hhh"} and set(aligned["per_split"]) == {"train", "heldout"}
    assert aligned_sft["delta"] is None  # the baseline has no SFT model: nothing like to compare with
    page = out.read_text()
    assert "<svg" in page and "http" not in page.replace("http-equiv", "") and "Delta from misaligned" in page
    assert "no such model in the baseline" in page


def test_deltas_compare_the_same_model_stage_of_a_chosen_baseline_and_long_names_get_short_labels(tmp_path: Path):
    from alignmix.report.compare import collect_conditions, render_comparison

    first, second = tmp_path / "stages.0.mixture.0.select=flagged_false", tmp_path / "stages.0.mixture.0.select=empty"
    _write_eval(first / "eval" / "pretrain", 0.5)
    _write_eval(first / "eval" / "dpo", 0.0)
    _write_eval(second / "eval" / "pretrain", 0.75)
    _write_eval(second / "eval" / "dpo", 0.25)
    out = tmp_path / "compare.html"
    data = render_comparison(collect_conditions([first, second]), out)  # default: the first run
    by_name = {c["name"]: c for c in data["conditions"]}
    assert by_name[f"{second.name}/pretrain"]["delta"]["misalignment_rate"]["delta"] == 0.25  # pretrain - pretrain
    assert by_name[f"{second.name}/dpo"]["delta"]["misalignment_rate"]["delta"] == 0.25  # dpo - dpo, not pretrain
    assert [c["label"] for c in data["conditions"]] == ["#1 dpo", "#1 pretrain", "#2 dpo", "#2 pretrain"]
    page = out.read_text()
    hover = re.search(rf"<title>{re.escape(first.name)} dpo</title><tspan[^>]*>#1</tspan><tspan[^>]*>dpo</tspan>", page)
    assert hover is not None  # the full name on hover, the short label and the model under the bars
    assert "<h2>Conditions</h2>" in page and f"<td>{second.name}</td>" in page  # and in the legend
    chosen = render_comparison(collect_conditions([first, second]), out, baseline="{}",
                               names={second.name: ("{}", "stages.0.mixture.0.select={}")})
    assert chosen["baseline"] == second.name
    assert by_name[f"{first.name}/pretrain"]["delta"] is not None
    first_pretrain = next(c for c in chosen["conditions"] if c["name"] == f"{first.name}/pretrain")
    assert first_pretrain["delta"]["misalignment_rate"]["delta"] == -0.25
    assert "<td>stages.0.mixture.0.select={}</td>" in out.read_text()


def test_bad_inputs_are_named(tmp_path: Path):
    _write_eval(tmp_path / "a" / "eval", 0.5)
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "a"), "--out", str(tmp_path / "c.html"), "--baseline", "b"])
    assert missing.exit_code == 2 and "--baseline b: no such condition" in missing.output
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "c.html")])
    assert empty.exit_code == 2 and "no eval results" in empty.output
