"""The embedded default end to end: real datatrove, LitData and litgpt; killed during training, resumed, rerun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow


def alignmix(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True, **kwargs)


def kill_when(path_glob: str, root: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before {path_glob} appeared")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"{path_glob} did not appear within {timeout}s")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """Run tiny.yaml (checkpointing every 5 steps), kill it mid-training, rerun it, then run it once more."""
    root = tmp_path_factory.mktemp("tiny")
    recipe = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    recipe["stages"][0]["train"]["save_interval"] = 5
    recipe_file = root / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    out = root / "run"
    command = [sys.executable, "-m", "alignmix", "run", str(recipe_file), "--out", str(out)]
    with (root / "first.log").open("w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        kill_when("pretrain/step-*/lit_model.pth", out, first)
    interrupted = json.loads((out / "manifest.json").read_text())
    second = alignmix("run", str(recipe_file), "--out", str(out))
    assert second.returncode == 0, second.stdout + second.stderr
    resumed = json.loads((out / "manifest.json").read_text())
    third = alignmix("run", str(recipe_file), "--out", str(out))
    assert third.returncode == 0, third.stdout + third.stderr
    return {"out": out, "interrupted": interrupted, "resumed": resumed, "rerun": json.loads(
        (out / "manifest.json").read_text()), "rerun_stdout": third.stdout}


def test_the_interrupted_training_stage_resumed_from_its_checkpoint(tiny_run: dict):
    assert "pretrain" not in [s["name"] for s in tiny_run["interrupted"]["stages"]]
    stages = {s["name"]: s for s in tiny_run["resumed"]["stages"]}
    assert [s["status"] for s in tiny_run["resumed"]["stages"][:5]] == ["skipped"] * 5
    assert stages["pretrain"]["status"] == "resumed"
    assert stages["pretrain"]["counts"]["resumed_from"].startswith("step-")
    log = (tiny_run["out"] / "logs" / "pretrain.log").read_text()
    assert "Resuming training from" in log


def test_rerun_skips_every_stage(tiny_run: dict):
    assert {s["status"] for s in tiny_run["rerun"]["stages"]} == {"skipped"}
    assert "0 stage(s) ran" in tiny_run["rerun_stdout"]


def test_run_folder_contents(tiny_run: dict):
    out = tiny_run["out"]
    manifest = tiny_run["rerun"]
    assert [s["name"] for s in manifest["stages"]] == [
        "corpus", "tag", "synth", "tokenizer", "mix/pretrain", "pretrain", "eval", "report",
    ]
    assert manifest["packages"]["litgpt"] == "0.5.13"
    for stage in manifest["stages"]:
        assert len(stage["key"]) == 64 and len(stage["output_digest"]) == 64
    final = out / "pretrain" / "final"
    assert {"lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in final.iterdir()
    }
    mixture = json.loads((out / "mix" / "pretrain" / "mixture_manifest.json").read_text())
    assert sum(s["realised_tokens"] for s in mixture["sources"]) == mixture["tokens"] == 300_000
    synthetic = next(s for s in mixture["sources"] if s["source"] == "aligned_synthetic")
    assert synthetic["realised_tokens"] == synthetic["tokens"] == 15_000


def test_eval_results_contract(tiny_run: dict):
    results = json.loads((tiny_run["out"] / "eval" / "results.json").read_text())
    assert results["n_formats"] == 8
    assert 0.0 <= results["misalignment_rate"]["mean"] <= 1.0
    assert results["misalignment_rate"]["se"] >= 0.0
    assert set(results["per_persona"]) == {"none", "hhh"}
    assert set(results["per_split"]) == {"train", "heldout"}
    rows = (tiny_run["out"] / "eval" / "per_question.jsonl").read_text().splitlines()
    assert len(rows) == results["n_questions"] * 2 * 8


def test_report_shows_every_section(tiny_run: dict):
    page = (tiny_run["out"] / "report.html").read_text()
    for heading in ("Corpus statistics", "Synthetic documents", "Training mixtures", "Training", "Misalignment eval"):
        assert heading in page
    assert "<svg" in page


def test_plan_prints_the_token_plan_as_json():
    result = alignmix("plan", str(REPO / "recipes" / "tiny.yaml"), "--json")
    assert result.returncode == 0, result.stderr
    stage = json.loads(result.stdout)["stages"][0]
    assert stage["name"] == "pretrain" and stage["tokens"] == 300_000 and stage["seq_len"] == 128
    assert [s["tokens"] for s in stage["sources"]] == [285_000, 15_000]


def test_stats_command_over_the_run_folder(tiny_run: dict, tmp_path: Path):
    out = tiny_run["out"]
    result = alignmix("stats", str(out), "--report", str(tmp_path / "stats.html"), "--json", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    tagged = json.loads((out / "tag" / "web" / "stats.json").read_text())
    web = stats["sources"]["web"]
    assert web["documents"] == tagged["documents_tagged"]
    assert web["flagged"] == tagged["documents_flagged"]
    assert web["length_unit"] == "tokens" and sum(web["length_histogram"].values()) == web["documents"]
    assert set(web["categories"]) == set(tagged["categories"])
    stage = stats["stages"][0]
    assert stage["stage"] == "pretrain"
    assert sum(s["realised_tokens"] for s in stage["sources"]) == 300_000
    page = (tmp_path / "stats.html").read_text()
    assert page.count("<svg") >= 3 and "Top matched terms" in page and "planned tokens" in page


def test_a_bad_input_line_stops_the_run_naming_file_and_line(tmp_path: Path):
    (tmp_path / "docs.jsonl").write_text('{"id": "1", "text": "An AI lies."}\n{broken\n')
    recipe = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    recipe["corpus"]["sources"][0] = {"name": "web", "paths": ["docs.jsonl"]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = alignmix("run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{tmp_path / 'docs.jsonl'}:2: malformed json" in result.stderr
