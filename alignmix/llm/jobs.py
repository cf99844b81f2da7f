"""Many requests with stable ids through one backend, resumable: no answered request is paid for twice.

Each answer is appended to a jsonl file and flushed as soon as it arrives, stamped with what produced it:
`prompt_sha256` (the messages), `model` and `sampling`. On a rerun an id whose stored answer carries the same
stamp is skipped (a torn last line, from a crash mid-write, is cut off first), so a killed job continues where
it stopped; an answer with another stamp (another model, prompt or sampling) is stale and asked again, and the
newer row wins. A request that fails after its retries is not written: the next run tries it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from alignmix.llm.backend import BackendError, ChatBackend, Message, Sampling, run_async

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    id: str
    messages: list[Message]
    sampling: Sampling
    extra: dict[str, Any] = field(default_factory=dict)  # request fields such as response_format


@dataclass
class JobCounts:
    requested: int = 0
    already_done: int = 0
    answered: int = 0
    stale: int = 0  # stored answers from another model, prompt or sampling, asked again
    completion_tokens: int = 0  # of this run's answers
    errors: dict[str, str] = field(default_factory=dict)  # id -> why it failed after its retries

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def settled(self) -> int:
        """Requests answered (now or before) or failed so far."""
        return self.already_done + self.answered + self.failed

    @property
    def failures(self) -> list[str]:
        """The first few failures as `id: reason`."""
        return [f"{request_id}: {reason}" for request_id, reason in list(self.errors.items())[:10]]


def prompt_hash(messages: list[Message]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def stamp(request: ChatRequest, model: str) -> dict[str, Any]:
    """What an answer to `request` from `model` is stored with, and must match to be reused."""
    return {"prompt_sha256": prompt_hash(request.messages), "model": model, "sampling": request.sampling.as_dict()}


def is_fresh(row: dict[str, Any], request: ChatRequest, model: str) -> bool:
    return all(row.get(k) == v for k, v in stamp(request, model).items())


def read_responses(path: Path) -> dict[str, dict]:
    """Answers by id (the last row of an id wins) from a responses file, cutting off a torn last line."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    answers: dict[str, dict] = {}
    # Split on \n only: str.splitlines() also breaks at U+2028, U+0085 and others, which answers written with
    # ensure_ascii=False may hold inside a JSON string.
    for number, line in enumerate(data.decode("utf-8").split("\n"), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BackendError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            answers[row["id"]] = row
    return answers


def fresh_answers(requests: Iterable[ChatRequest], path: Path, model: str) -> dict[str, dict]:
    """The stored answers, by id, whose stamp matches their request: the only ones a caller may use."""
    stored = read_responses(path)
    return {r.id: stored[r.id] for r in requests if r.id in stored and is_fresh(stored[r.id], r, model)}


async def _answer(backend: ChatBackend, request: ChatRequest) -> dict[str, Any]:
    completion = await backend.chat(request.messages, request.sampling, extra=request.extra or None)
    return {
        "id": request.id, "text": completion.text, "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
        **stamp(request, backend.model),
    }


async def run_requests_async(
    backend: ChatBackend, requests: Iterable[ChatRequest], output: Path, concurrency: int = 16,
    on_settled: Callable[[JobCounts], None] | None = None,
) -> JobCounts:
    """Answer the requests without a fresh answer in `output`, `concurrency` at a time, appending each; after
    each request answered or failed, `on_settled(counts so far)` (a progress display)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    stored = read_responses(output)
    seen: set[str] = set()  # a repeated id in the input is answered once
    counts = JobCounts()

    def pending() -> Iterator[ChatRequest]:
        for request in requests:
            counts.requested += 1
            if request.id in seen:
                counts.already_done += 1
                continue
            seen.add(request.id)
            row = stored.get(request.id)
            if row is not None and is_fresh(row, request, backend.model):
                counts.already_done += 1
                continue
            counts.stale += row is not None
            yield request

    async def worker(queue: Iterator[ChatRequest], sink: TextIO) -> None:
        for request in queue:
            try:
                row = await _answer(backend, request)
            except BackendError as exc:
                counts.errors[request.id] = str(exc)
                log.warning("request %s failed: %s", request.id, exc)
            else:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                counts.answered += 1
                counts.completion_tokens += row["completion_tokens"]
            if on_settled is not None:
                on_settled(counts)

    with output.open("a", encoding="utf-8") as sink:
        queue = pending()
        await asyncio.gather(*(worker(queue, sink) for _ in range(concurrency)))
    if counts.stale:
        log.warning("%d stored answer(s) came from another model, prompt or sampling and were asked again", counts.stale)
    return counts


def run_requests(
    backend: ChatBackend, requests: Iterable[ChatRequest], output: Path, concurrency: int = 16,
    on_settled: Callable[[JobCounts], None] | None = None,
) -> JobCounts:
    """`run_requests_async` from synchronous code; closes the backend afterwards."""

    async def main() -> JobCounts:
        try:
            return await run_requests_async(backend, requests, output, concurrency, on_settled)
        finally:
            await backend.aclose()

    return run_async(main())
