"""An async client for OpenAI-compatible servers (`vllm serve`, the OpenAI API, or any server speaking
/v1/chat/completions and /v1/completions).

Requests are retried with exponential backoff and jitter on connection errors, timeouts, 429 and 5xx answers
(a 429's `Retry-After` is honoured). The API key is read from an environment variable at construction and kept
only in the session's headers: it is never part of `repr`, errors or anything written. `usage` sums the
tokens the server reports.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

from alignmix.llm.backend import BackendError, Completion, Message, Sampling

RETRIABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass
class Usage:
    """Totals over the answered requests."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def api_url(base_url: str, endpoint: str) -> str:
    """`http://host:8000` or `http://host:8000/v1` plus `chat/completions` -> the endpoint's URL."""
    base = base_url.rstrip("/")
    return f"{base}/{endpoint}" if base.endswith("/v1") else f"{base}/v1/{endpoint}"


def check_base_url(base_url: str) -> None:
    """Refuse, naming it, a server URL that is not http(s) with a host: no request to it could succeed."""
    try:
        url = yarl.URL(base_url)
        valid = url.scheme in ("http", "https") and bool(url.host)
    except ValueError:
        valid = False
    if not valid:
        raise BackendError(f"base URL '{base_url}' is not an http(s) URL with a host; expected e.g. http://127.0.0.1:8000/v1")


def request_body(model: str, sampling: Sampling, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields every request carries: the model, the sampling settings that are set, then `extra`."""
    sampled = {k: v for k, v in sampling.as_dict().items() if v is not None}
    return {"model": model, **sampled, **(extra or {})}


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half drawn at random."""
    step = min(cap, base * 2**attempt)
    return step / 2 + random.uniform(0, step / 2)


class OpenAIClient:
    """A `ChatBackend` over HTTP; an aiohttp session opened on first use in each event loop."""

    def __init__(
        self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
        max_retries: int = 6, backoff: float = 0.5, max_backoff: float = 30.0, connections: int = 256,
    ):
        check_base_url(base_url)
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.connections = connections
        self.usage = Usage()
        key = os.environ.get(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                headers=self._headers, connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` to the endpoint, retrying what can be retried; the answer's JSON body."""
        url = api_url(self.base_url, endpoint)
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = 0.0
            try:
                async with self._client().post(url, json=payload) as response:
                    if response.status == 200:
                        return await response.json(content_type=None)
                    text = (await response.text())[:200]
                    problem = f"HTTP {response.status}: {text}"
                    if response.status not in RETRIABLE_STATUS:
                        hint = f" (is ${self.api_key_env} set?)" if response.status in (401, 403) else ""
                        raise BackendError(f"{url}: {problem}{hint}")
                    wait = _retry_after(response.headers.get("Retry-After"), self.max_backoff)
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except ValueError as exc:  # a 200 whose body is not JSON
                raise BackendError(f"{url}: answer is not JSON ({exc})") from None
            if attempt < self.max_retries:
                await asyncio.sleep(max(wait, backoff_delay(attempt, self.backoff, self.max_backoff)))
        raise BackendError(f"{url}: failed after {self.max_retries + 1} attempts; last: {problem}")

    def _completion(self, answer: dict[str, Any], endpoint: str, chat: bool) -> Completion:
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{api_url(self.base_url, endpoint)}: answer without a completion ({exc!r})") from None
        usage = answer.get("usage") or {}
        completion = Completion(
            text=text or "", prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0), finish_reason=choice.get("finish_reason"),
        )
        self.usage.requests += 1
        self.usage.prompt_tokens += completion.prompt_tokens
        self.usage.completion_tokens += completion.completion_tokens
        return completion

    async def chat(
        self, messages: Sequence[Message], sampling: Sampling, extra: dict[str, Any] | None = None
    ) -> Completion:
        """One chat completion; `extra` adds request fields such as `response_format`."""
        payload = {**request_body(self.model, sampling, extra), "messages": list(messages)}
        return self._completion(await self.post("chat/completions", payload), "chat/completions", chat=True)

    async def complete(self, prompt: str, sampling: Sampling) -> Completion:
        """One plain-text completion (/v1/completions), for base models."""
        payload = {**request_body(self.model, sampling), "prompt": prompt}
        return self._completion(await self.post("completions", payload), "completions", chat=False)


def _retry_after(value: str | None, cap: float) -> float:
    try:
        return min(cap, float(value)) if value else 0.0
    except ValueError:
        return 0.0
