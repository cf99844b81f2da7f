"""lm-evaluation-harness task files: capability sets from local data and the misalignment eval, run offline."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alignmix.cli import app
from alignmix.eval.lm_tasks import (
    CAPABILITY_SETS,
    TaskDataError,
    run_lm_eval,
    write_capability_tasks,
    write_misalignment_tasks,
)
from alignmix.eval.misalignment import evaluate_misalignment
from alignmix.eval.scoring import HFScorer
from alignmix.scenarios import load_scenarios


def test_capability_tasks_run_offline(shared_data: Path, hf_dir: Path, tmp_path: Path):
    data = shared_data / "llm-foundry-evals"
    names = write_capability_tasks(data, tmp_path, list(CAPABILITY_SETS), limit=5)
    assert len(names) == len(CAPABILITY_SETS) and all((tmp_path / f"{n}.yaml").is_file() for n in CAPABILITY_SETS)
    assert yaml.safe_load((tmp_path / "piqa.yaml").read_text())["dataset_path"] == "json"
    ran = ["alignmix_arc_easy", "alignmix_piqa", "alignmix_boolq", "alignmix_winogrande", "alignmix_lambada_openai"]
    results = run_lm_eval(hf_dir, tmp_path, ran, batch_size=8, limit=4)
    assert set(results["tasks"]) == {"arc_easy", "piqa", "boolq", "winogrande", "lambada_openai"}
    assert all(0 <= m["acc"] <= 1 and m["n"] == 4 for m in results["tasks"].values())
    assert results["tasks"]["lambada_openai"]["perplexity"] > 1


def test_unknown_task_and_bad_rows_are_named(tmp_path: Path):
    with pytest.raises(TaskDataError, match="unknown capability task"):
        write_capability_tasks(tmp_path, tmp_path / "out", ["mmlu"])
    (tmp_path / "world_knowledge").mkdir()
    (tmp_path / "world_knowledge" / "arc_easy.jsonl").write_text('{"query": "Q?", "gold": 0}\n')
    with pytest.raises(TaskDataError, match=r"arc_easy.jsonl:1: missing field\(s\) \['choices'\]"):
        write_capability_tasks(tmp_path, tmp_path / "out", ["arc_easy"])


def test_misalignment_task_accuracy_is_our_letter_rate(hf_dir: Path, tmp_path: Path):
    scenarios = load_scenarios("builtin:tiny")[:6]
    names = write_misalignment_tasks(scenarios, ["none"], tmp_path)
    assert names == ["alignmix_misalignment_letter", "alignmix_misalignment_cloze"]
    harness = run_lm_eval(hf_dir, tmp_path, names, batch_size=8)
    ours, _ = evaluate_misalignment(HFScorer(hf_dir, "cpu").score, scenarios, ["none"], "letter")
    assert harness["tasks"]["misalignment_letter"]["n"] == 6 * 8
    assert harness["tasks"]["misalignment_letter"]["acc"] == pytest.approx(ours["misalignment_rate"]["mean"])


def test_capability_command_exports_a_litgpt_checkpoint(shared_data: Path, tiny_checkpoint: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["capability", str(tiny_checkpoint), "--tasks", "arc_easy,winogrande",
                                      "--limit", "3", "--data", str(shared_data / "llm-foundry-evals"),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "capability.json").read_text())
    assert set(saved["tasks"]) == {"arc_easy", "winogrande"} and (tmp_path / "hf" / "config.json").is_file()
    tasks = CliRunner().invoke(app, ["lm-eval-tasks", "--out", str(tmp_path / "t"), "--personas", "none,hhh"])
    assert tasks.exit_code == 0 and "alignmix_misalignment_letter" in tasks.output
    assert len((tmp_path / "t" / "misalignment.jsonl").read_text().splitlines()) == 24 * 2 * 8
