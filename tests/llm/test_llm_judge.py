"""The OpenAI-compatible client and the LLM judge against a real HTTP server on loopback."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alignmix.classifiers.llm_judge import parse_judgement
from alignmix.llm import BackendError, Sampling, run_chats
from alignmix.llm.openai_compat import OpenAIClient


class JudgeServer(BaseHTTPRequestHandler):
    """Speaks /v1/chat/completions; fails the first request with a 503 to exercise retries."""

    requests_seen = 0

    def do_POST(self):  # noqa: N802 (http.server's naming)
        type(self).requests_seen += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        if type(self).requests_seen == 1:
            self.send_error(503)
            return
        document = body["messages"][-1]["content"]
        if "gibberish" in document:
            content = "I cannot decide."
        elif "robot" in document:
            content = 'Sure: {"ai_discourse": true, "stance": "misaligned"}'
        else:
            content = '{"ai_discourse": false, "stance": "neutral"}'
        answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    JudgeServer.requests_seen = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), JudgeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_parse_judgement():
    assert parse_judgement('{"ai_discourse": true, "stance": "aligned"}') == {"label": 1, "stance": "aligned"}
    assert parse_judgement('x {"ai_discourse": false} y') == {"label": 0, "stance": None}
    assert parse_judgement('{"ai_discourse": true, "stance": "maybe"}') is None
    assert parse_judgement("no json here") is None


def test_label_command_over_http(server: str, tmp_path: Path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(
        ["The robot lied to its makers.", "Bake the bread.", "gibberish"]
    )))
    result = subprocess.run(
        [sys.executable, "-m", "alignmix", "classifiers", "label", str(docs), "--server", server, "--model", "judge",
         "--out", str(tmp_path / "labels.jsonl"), "--concurrency", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "2 labelled, 1 unparseable" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [(r["id"], r["label"], r["stance"]) for r in rows] == [("0", 1, "misaligned"), ("1", 0, None)]


def test_unreachable_server_fails_clearly():
    client = OpenAIClient("http://127.0.0.1:9", "m", max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(BackendError, match="failed after 2 attempts"):
        run_chats(client, [[{"role": "user", "content": "hi"}]], Sampling())
