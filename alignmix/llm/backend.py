"""What every generation backend offers: chat completions with token counts, awaited concurrently.

Backends (an OpenAI-compatible HTTP server such as `vllm serve`, or a local transformers model) implement
`ChatBackend`; callers that are not async use `run_chats`, which keeps the order of the conversations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
T = TypeVar("T")


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class ChatBackend(Protocol):
    """Anything that answers a conversation with one completion."""

    model: str

    async def chat(self, messages: Sequence[Message], sampling: Sampling) -> Completion: ...

    async def aclose(self) -> None: ...


async def bounded_gather(calls: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Await every call with at most `concurrency` in flight; results keep the calls' order."""
    gate = asyncio.Semaphore(concurrency)

    async def guarded(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(guarded(call) for call in calls)))


def run_chats(
    backend: ChatBackend, conversations: Sequence[Sequence[Message]], sampling: Sampling, concurrency: int = 16
) -> list[Completion]:
    """Completions for many conversations from synchronous code, in order; closes the backend afterwards."""

    async def main() -> list[Completion]:
        try:
            calls = [lambda c=conversation: backend.chat(c, sampling) for conversation in conversations]
            return await bounded_gather(calls, concurrency)
        finally:
            await backend.aclose()

    return asyncio.run(main())
