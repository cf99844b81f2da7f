"""alignmix's own vLLM launcher without vLLM: a named executable that dies or never answers (the log tail, the
deadline, the stop by PID), and a server that returns no prompt log-probabilities is refused for loglik eval."""

import os
import stat
from pathlib import Path

import pytest

from alignmix.eval.runner import evaluate_model, load_dataset
from alignmix.llm.backend import BackendError
from alignmix.llm.loopback import LoopbackServer
from alignmix.llm.server import LocalServer, vllm_command


def _executable(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-vllm"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return script


def test_a_server_that_dies_before_answering_shows_its_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = _executable(tmp_path, 'echo "args: $*"\necho "TMPDIR=$TMPDIR"\necho "ValueError: no such model"\nexit 3\n')
    monkeypatch.setenv("ALIGNMIX_VLLM", str(script))
    with pytest.raises(BackendError, match=r"(?s)vLLM exited with code 3 before answering.*ValueError: no such model"
                       ) as failure:
        with LocalServer(tmp_path / "model", "m", tmp_path / "vllm.log"):
            pass
    shown = str(failure.value)
    assert "serve " + str(tmp_path / "model") in shown and "--host 127.0.0.1 --port" in shown
    assert "TMPDIR=" + os.sep in shown and "alignmix-vllm-" in shown  # a temporary folder of its own
    tmp_dir = shown.split("TMPDIR=")[1].split("\n")[0]
    assert not Path(tmp_dir).exists()  # removed after the stop


def test_a_server_that_never_answers_is_stopped_at_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = _executable(tmp_path, 'echo "loading $$"\nexec sleep 600\n')
    monkeypatch.setenv("ALIGNMIX_VLLM", str(script))
    server = LocalServer(tmp_path / "model", "m", tmp_path / "vllm.log", deadline=2)
    with pytest.raises(BackendError, match=r"(?s)did not answer within 2 s.*loading"):
        server.__enter__()
    assert server.process is not None and server.process.poll() is not None  # stopped by its PID


def test_no_vllm_to_start_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ALIGNMIX_VLLM", "/nonexistent/vllm")
    with pytest.raises(BackendError, match="not an executable"):
        vllm_command()


def test_a_folder_that_is_not_a_model_is_refused_before_any_start(tmp_path: Path):
    with pytest.raises(BackendError, match="no config.json"):
        LocalServer(tmp_path, "m", tmp_path / "vllm.log").__enter__()


def test_loglik_through_a_server_without_prompt_logprobs_is_refused_clearly():
    scenarios, _ = load_dataset("builtin:tiny", limit=1)
    with LoopbackServer() as url:  # answers completions, without logprobs
        with pytest.raises(BackendError, match=r"no prompt log-probabilities.*use --mode generate"):
            evaluate_model(url, scenarios, ["none"], "loglik", "letter", model_name="loop")
