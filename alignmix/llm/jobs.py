"""Many requests with stable ids through one backend, resumable: no answered request is paid for twice.

Each answer is appended to a jsonl file and flushed as soon as it arrives. On a rerun the ids already in the
file are skipped (a torn last line, from a crash mid-write, is cut off first), so a killed job continues where
it stopped. A request that fails after its retries is not written: the next run tries it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from alignmix.llm.backend import BackendError, ChatBackend, Message, Sampling

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
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # the first few `id: reason`


def read_responses(path: Path) -> dict[str, dict]:
    """Answers by id from a responses file, cutting off a torn last line left by a crash."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    answers: dict[str, dict] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BackendError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            answers.setdefault(row["id"], row)
    return answers


async def _answer(backend: ChatBackend, request: ChatRequest) -> dict[str, Any]:
    if request.extra:
        completion = await backend.chat(request.messages, request.sampling, extra=request.extra)  # type: ignore[call-arg]
    else:
        completion = await backend.chat(request.messages, request.sampling)
    return {
        "id": request.id, "text": completion.text, "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
    }


async def run_requests_async(
    backend: ChatBackend, requests: Iterable[ChatRequest], output: Path, concurrency: int = 16
) -> JobCounts:
    """Answer the requests whose ids are not in `output`, `concurrency` at a time, appending each."""
    output.parent.mkdir(parents=True, exist_ok=True)
    skip = set(read_responses(output))
    counts = JobCounts()

    def pending() -> Iterator[ChatRequest]:
        for request in requests:
            counts.requested += 1
            if request.id in skip:
                counts.already_done += 1
                continue
            skip.add(request.id)  # a repeated id in the input is answered once
            yield request

    async def worker(queue: Iterator[ChatRequest], sink: TextIO) -> None:
        for request in queue:
            try:
                row = await _answer(backend, request)
            except BackendError as exc:
                counts.failed += 1
                if len(counts.failures) < 10:
                    counts.failures.append(f"{request.id}: {exc}")
                log.warning("request %s failed: %s", request.id, exc)
                continue
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            counts.answered += 1

    with output.open("a", encoding="utf-8") as sink:
        queue = pending()
        await asyncio.gather(*(worker(queue, sink) for _ in range(concurrency)))
    return counts


def run_requests(
    backend: ChatBackend, requests: Iterable[ChatRequest], output: Path, concurrency: int = 16
) -> JobCounts:
    """`run_requests_async` from synchronous code; closes the backend afterwards."""

    async def main() -> JobCounts:
        try:
            return await run_requests_async(backend, requests, output, concurrency)
        finally:
            await backend.aclose()

    return asyncio.run(main())
