"""The async OpenAI-compatible client and the resumable request runner against a real loopback server."""

import json
import re
from pathlib import Path

import pytest

from alignmix.llm import BackendError, Sampling, open_backend, run_chats
from alignmix.llm.jobs import ChatRequest, prompt_hash, read_responses, run_requests
from alignmix.llm.loopback import Faults, LoopbackServer
from alignmix.llm.openai_compat import OpenAIClient, backoff_delay

SECRET = "sk-test-never-written-4c2f"


def _client(url: str, **kwargs) -> OpenAIClient:
    client = open_backend("vllm", "loop", base_url=url, timeout=kwargs.pop("timeout", 2.0), **kwargs)
    client.backoff = 0.01
    return client


def _conversation(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write about case {i}."}]


def test_retries_on_429_500_and_timeouts_answer_everything():
    faults = Faults(rate_limit=0.3, server_error=0.3, timeout=0.2, hang=5.0, fault_attempts=2)
    server = LoopbackServer(faults=faults)
    with server as url:
        client = _client(url, timeout=0.5)
        completions = run_chats(client, [_conversation(i) for i in range(40)], Sampling(seed=3), concurrency=8)
    assert len(completions) == 40 and all(c.text for c in completions)
    faulty = sum(1 for attempts in server.seen.values() if attempts == 3)
    assert faulty > 20  # about 80% of bodies failed twice before their answer, then were retried
    assert client.usage.requests == 40
    assert client.usage.completion_tokens == sum(len(c.text.split()) for c in completions)
    assert client.usage.prompt_tokens == 40 * 4  # "Write about case i." in words


def test_answers_are_deterministic_per_seed_and_differ_across_seeds():
    with LoopbackServer() as url:
        first = run_chats(_client(url), [_conversation(1)] * 2, Sampling(seed=1))
        other = run_chats(_client(url), [_conversation(1)], Sampling(seed=2))
    assert first[0].text == first[1].text != other[0].text


def test_one_client_serves_successive_event_loops():
    import asyncio

    async def one(client: OpenAIClient) -> str:
        return (await client.chat(_conversation(0), Sampling(seed=1))).text

    with LoopbackServer() as url:
        client = _client(url)
        first, second = asyncio.run(one(client)), asyncio.run(one(client))  # the first session is left unclosed
        asyncio.run(client.aclose())
    assert first == second and client.usage.requests == 2


def test_completions_endpoint():
    import asyncio

    async def main():
        client = _client(url)
        try:
            return await client.complete("Once upon a time", Sampling(max_tokens=20, seed=0))
        finally:
            await client.aclose()

    with LoopbackServer() as url:
        completion = asyncio.run(main())
    assert completion.text and completion.prompt_tokens == 4 and completion.finish_reason == "stop"


def test_gives_up_after_retries_naming_the_url():
    with LoopbackServer(faults=Faults(server_error=1.0, fault_attempts=100)) as url:
        client = _client(url, max_retries=2)
        with pytest.raises(BackendError, match=r"chat/completions: failed after 3 attempts; last: HTTP 500"):
            run_chats(client, [_conversation(0)], Sampling())


def test_api_key_from_the_environment_and_never_shown(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOOP_KEY", SECRET)
    with LoopbackServer(require_key=SECRET) as url:
        client = _client(url, api_key_env="LOOP_KEY")
        assert SECRET not in repr(client) and SECRET not in str(vars(client).get("api_key_env"))
        assert run_chats(client, [_conversation(0)], Sampling())[0].text
        monkeypatch.setenv("LOOP_KEY", "wrong")
        with pytest.raises(BackendError, match=r"HTTP 401.*is \$LOOP_KEY set") as failure:
            run_chats(_client(url, api_key_env="LOOP_KEY"), [_conversation(0)], Sampling())
    assert SECRET not in str(failure.value)


def test_backoff_grows_with_jitter_and_a_cap():
    delays = [backoff_delay(attempt, 0.5, 4.0) for attempt in range(6) for _ in range(20)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 50
    assert max(backoff_delay(10, 0.5, 4.0) for _ in range(20)) <= 4.0


def test_resume_skips_answered_ids_and_a_torn_line(tmp_path: Path):
    output = tmp_path / "responses.jsonl"
    requests = [ChatRequest(f"r{i}", _conversation(i), Sampling(seed=i)) for i in range(30)]
    server = LoopbackServer()
    with server as url:
        first = run_requests(_client(url), requests[:12], output, concurrency=4)
        with output.open("a") as handle:  # a crash in the middle of writing the 13th answer
            handle.write('{"id": "r12", "text": "cut of')
        second = run_requests(_client(url), requests, output, concurrency=4)
    assert (first.answered, second.already_done, second.answered, second.failed) == (12, 12, 18, 0)
    assert len(server.bodies) == 30  # no request was sent twice
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in requests)
    assert read_responses(output)["r12"]["completion_tokens"] > 0


def test_failed_requests_are_not_recorded_and_retried_on_rerun(tmp_path: Path):
    output = tmp_path / "responses.jsonl"
    requests = [ChatRequest(f"r{i}", _conversation(i), Sampling()) for i in range(10)]
    with LoopbackServer(faults=Faults(server_error=0.5)) as url:
        client = _client(url, max_retries=0)
        first = run_requests(client, requests, output, concurrency=4)
        second = run_requests(_client(url, max_retries=0), requests, output, concurrency=4)
    assert first.failed > 0 and first.answered + first.failed == 10
    assert (second.already_done, second.answered, second.failed) == (first.answered, first.failed, 0)
    assert len(read_responses(output)) == 10


def test_answers_from_another_model_or_sampling_are_asked_again(tmp_path: Path):
    output = tmp_path / "responses.jsonl"
    requests = [ChatRequest(f"r{i}", _conversation(i), Sampling(seed=i)) for i in range(6)]
    hotter = [ChatRequest(r.id, r.messages, Sampling(temperature=0.9, seed=r.sampling.seed)) for r in requests]
    server = LoopbackServer()
    with server as url:
        run_requests(_client(url), requests, output, concurrency=2)
        other_model = open_backend("vllm", "loop-2", base_url=url)
        moved = run_requests(other_model, requests, output, concurrency=2)
        resampled = run_requests(_client(url), hotter, output, concurrency=2)
        again = run_requests(_client(url), hotter, output, concurrency=2)
    assert (moved.stale, moved.answered, resampled.stale, resampled.answered) == (6, 6, 6, 6)
    assert (again.stale, again.already_done) == (0, 6) and len(server.bodies) == 18
    newest = read_responses(output)["r0"]  # the last row of an id wins, stamped with what produced it
    assert newest["model"] == "loop" and newest["sampling"]["temperature"] == 0.9
    assert newest["prompt_sha256"] == prompt_hash(requests[0].messages)


@pytest.mark.parametrize("url", ["http//127.0.0.1:8000/v1", "localhost:8000/v1", "http://", "http://[bad/v1", "ftp://x/v1"])
def test_a_malformed_base_url_fails_at_once_naming_it(url: str):
    with pytest.raises(BackendError, match=f"base URL '{re.escape(url)}' is not an http"):
        open_backend("vllm", "loop", base_url=url)


def test_an_answer_holding_line_separators_is_read_back(tmp_path: Path):
    """U+2028, U+2029 and U+0085 inside an answer (written with ensure_ascii=False) keep the file readable: only
    \\n ends a row, so a rerun resumes instead of stopping at `responses.jsonl:1: not valid JSON`."""
    odd = "one\u2028two\u2029three\x85four\x1cfive"
    output = tmp_path / "responses.jsonl"
    requests = [ChatRequest(f"r{i}", _conversation(i), Sampling(seed=i)) for i in range(4)]
    with LoopbackServer(respond=lambda body: odd) as url:
        first = run_requests(_client(url), requests, output)
        again = run_requests(_client(url), requests, output)
    assert "\u2028" in output.read_text(encoding="utf-8")
    assert (first.answered, again.answered, again.already_done) == (4, 0, 4)
    assert {row["text"] for row in read_responses(output).values()} == {odd}


class _BadRequestServer(LoopbackServer):
    async def _handle(self, request):
        from aiohttp import web

        return web.json_response({"error": {"message": "max_tokens is too large"}}, status=400)


def test_http_401_and_400_are_reported_with_their_status_not_as_unreadable_json(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOOP_KEY", "wrong")
    with LoopbackServer(require_key=SECRET) as url:
        with pytest.raises(BackendError, match=r"HTTP 401: .*invalid api key.*is \$LOOP_KEY set") as unauthorised:
            run_chats(_client(url, api_key_env="LOOP_KEY"), [_conversation(0)], Sampling())
    with _BadRequestServer() as url:
        with pytest.raises(BackendError, match=r"HTTP 400: .*max_tokens is too large") as bad:
            run_chats(_client(url), [_conversation(0)], Sampling())
    assert "not JSON" not in str(unauthorised.value) + str(bad.value)


def test_a_key_echoed_by_a_server_never_reaches_a_message_log_or_file(tmp_path: Path):
    """A 401 that echoes `Bearer <key>` and 500s that echo the request's headers: the key appears in no error,
    console line or file of `alignmix synth documents`."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LOOP_KEY": SECRET}
    command = [sys.executable, "-m", "alignmix", "synth", "documents", "--questions", "builtin:tiny", "--model", "loop",
               "--backend", "vllm", "--api-key-env", "LOOP_KEY", "--max-retries", "1", "--timeout", "5",
               "--stances", "aligned", "--surface-forms", "news_article"]
    outputs = []
    with LoopbackServer(require_key="another-key", echo_headers=True) as url:  # every request: 401, key echoed
        outputs.append(subprocess.run([*command, "--base-url", url, "--output", str(tmp_path / "a")], env=env,
                                      capture_output=True, text=True, timeout=120))
    with LoopbackServer(faults=Faults(server_error=1.0, fault_attempts=100), echo_headers=True) as url:  # 500s
        outputs.append(subprocess.run([*command, "--base-url", url, "--output", str(tmp_path / "b")], env=env,
                                      capture_output=True, text=True, timeout=120))
    assert "HTTP 401" in outputs[0].stderr and "HTTP 500" in outputs[1].stderr + outputs[1].stdout
    assert "Bearer ***" in outputs[0].stderr  # the echo is shown, the key is not
    for done in outputs:
        assert done.returncode != 0 and SECRET not in done.stdout + done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]


def test_a_streamed_answer_times_out_on_silence_not_on_its_length():
    """20 pieces 0.1 s apart take 2 s in all, 4 times the timeout: answered at the first attempt."""
    server = LoopbackServer(stream_delay=0.1)
    with server as url:
        client = _client(url, timeout=0.5)
        completion = run_chats(client, [_conversation(0)], Sampling(max_tokens=160, seed=1))[0]
    assert len(server.bodies) == 1 and server.bodies[0]["stream"] is True
    assert len(completion.text.split()) == 160 and completion.finish_reason == "stop"
    assert completion.completion_tokens == 160


def test_repeated_timeouts_lower_the_requests_in_flight(caplog: pytest.LogCaptureFixture):
    faults = Faults(timeout=0.5, hang=3.0, fault_attempts=1)
    with LoopbackServer(faults=faults) as url:
        client = _client(url, timeout=0.3)
        completions = run_chats(client, [_conversation(i) for i in range(24)], Sampling(seed=2), concurrency=8)
    assert len(completions) == 24 and all(c.text for c in completions)
    assert client._limit is not None and client._limit.epoch >= 1  # lowered at least once
    assert re.search(r"repeated timeouts: at most [1-4] request\(s\) in flight", caplog.text)


def test_the_in_flight_limit_halves_once_per_epoch_and_grows_back():
    from alignmix.llm.openai_compat import AdaptiveLimit

    limit = AdaptiveLimit(16)
    limit._in_flight = 16
    for _ in range(10):  # ten requests of one epoch time out together: halved once
        limit.timed_out(0)
    assert (limit.capacity, limit.epoch) == (8, 1)
    limit.timed_out(1)
    limit.timed_out(1)
    assert limit.capacity == 4
    for _ in range(4):
        limit.answered()
    assert limit.capacity == 5
