"""`alignmix report RUN...`: conditions from run folders, deltas from a baseline, one offline HTML page + JSON."""

import json
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
    aligned = data["conditions"][0]
    assert aligned["delta"]["misalignment_rate"]["delta"] == -0.5
    assert aligned["delta"]["capability"]["arc_easy"]["delta"] == 0.30 - 0.28
    assert set(aligned["per_persona"]) == {"none", "hhh"} and set(aligned["per_split"]) == {"train", "heldout"}
    page = out.read_text()
    assert "<svg" in page and "http" not in page.replace("http-equiv", "") and "Delta from misaligned/pretrain" in page


def test_bad_inputs_are_named(tmp_path: Path):
    _write_eval(tmp_path / "a" / "eval", 0.5)
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "a"), "--out", str(tmp_path / "c.html"), "--baseline", "b"])
    assert missing.exit_code == 2 and "--baseline b: no such condition" in missing.output
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "c.html")])
    assert empty.exit_code == 2 and "no eval results" in empty.output
