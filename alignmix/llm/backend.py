"""What every generation backend offers: chat completions with token counts, awaited concurrently.

Backends (an OpenAI-compatible HTTP server such as `vllm serve`, or a local transformers model) implement
`ChatBackend`; callers that are not async use `run_chats`, which keeps the order of the conversations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, TypeVar

from alignmix.errors import AlignmixError

BackendKind = Literal["openai", "vllm", "transformers"]
T = TypeVar("T")
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "vllm": "http://127.0.0.1:8000/v1"}


class Message(TypedDict):
    """One chat turn, a plain dict as OpenAI's API and transformers' chat templates take it; backends send it,
    SFT and DPO render and tokenize it (`alignmix.train.chat`)."""

    role: str  # system | user | assistant
    content: str


class BackendError(AlignmixError, RuntimeError):
    """A request that failed after its retries, or an answer without a completion."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def with_seed(self, seed: int | None) -> Sampling:
        return Sampling(self.max_tokens, self.temperature, self.top_p, seed)

    def as_dict(self) -> dict[str, float | int | None]:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


class ChatBackend(Protocol):
    """Anything that answers a conversation with one completion."""

    model: str

    async def chat(
        self, messages: Sequence[Message], sampling: Sampling, extra: dict[str, Any] | None = None
    ) -> Completion:
        """`extra` adds request fields such as `response_format` (a backend without them may ignore it)."""
        ...

    async def aclose(self) -> None: ...


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a cheaper loop: more requests per core), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(main: Awaitable[T]) -> T:
    """`asyncio.run` on `new_event_loop()`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)  # type: ignore[arg-type]


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

    return run_async(main())


def open_backend(
    kind: BackendKind, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 120.0, max_retries: int = 6, connections: int = 256,
) -> ChatBackend:
    """A backend by kind: `openai` / `vllm` (OpenAI-compatible HTTP at `base_url`) or `transformers` (`model`
    is a local Hugging Face folder, run on the CPU). The API key is read from `api_key_env`, never stored elsewhere."""
    if kind in ("openai", "vllm"):
        from alignmix.llm.openai_compat import OpenAIClient

        return OpenAIClient(
            base_url or DEFAULT_BASE_URLS[kind], model, api_key_env=api_key_env, timeout=timeout,
            max_retries=max_retries, connections=connections,
        )
    if kind == "transformers":
        from alignmix.llm.local import TransformersBackend

        return TransformersBackend(model)
    raise BackendError(f"unknown backend '{kind}'; expected openai, vllm or transformers")
