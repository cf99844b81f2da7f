"""An async client for OpenAI-compatible servers (`vllm serve`, the OpenAI API, or any server speaking
/v1/chat/completions and /v1/completions).

Completions are streamed (server-sent events), so `timeout` bounds the server's silence, not the whole
generation: a long document that keeps arriving never times out. A server that does not stream answers with
one JSON body, which is read as well. Requests are retried with exponential backoff and jitter on connection
errors, timeouts, 429 and 5xx answers (a 429's `Retry-After` is honoured); repeated timeouts lower the number of
requests in flight (`AdaptiveLimit`) rather than piling more work on a server that is already behind.

The API key is read from an environment variable at construction and kept only in the session's headers: it
is never part of `repr`, and it is removed from every text a server sends back (a 401 that echoes
`Bearer sk-...`, a 500 that echoes the request's headers) before that text enters a message, log or error.
`usage` sums the tokens the server reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import yarl

from alignmix.llm.backend import BackendError, Completion, Message, Sampling

log = logging.getLogger(__name__)
RETRIABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_BEARER = re.compile(r"(Bearer\s+)[^\s'\",}]+", re.IGNORECASE)


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


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` without any of `secrets` and without whatever follows `Bearer ` (a header a server echoed)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


class AdaptiveLimit:
    """At most `capacity` requests in flight, halved (from what is in flight, if fewer) on repeated timeouts and
    grown back by one after `capacity` answers in a row. A timeout counts against the epoch its request started in: the many requests a
    stalled server times out together lower the limit once, not once each."""

    def __init__(self, capacity: int):
        self.ceiling = self.capacity = max(1, capacity)
        self.epoch = 0
        self._in_flight = 0
        self._timeouts = 0
        self._answers = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_flight < self.capacity)
            self._in_flight += 1
        try:
            yield self.epoch
        finally:
            async with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def timed_out(self, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self._timeouts += 1
        self._answers = 0
        if self._timeouts >= 2 and self.capacity > 1:
            self.capacity = max(1, min(self.capacity, self._in_flight) // 2)
            self.epoch += 1
            self._timeouts = 0
            log.warning("repeated timeouts: at most %d request(s) in flight from now on", self.capacity)

    def answered(self) -> None:
        self._answers += 1
        if self._answers >= self.capacity and self.capacity < self.ceiling:
            self.capacity += 1
            self._answers = 0


class _Retriable(Exception):
    def __init__(self, problem: str, wait: float = 0.0, timed_out: bool = False):
        super().__init__(problem)
        self.problem, self.wait, self.timed_out = problem, wait, timed_out


class OpenAIClient:
    """A `ChatBackend` over HTTP; an aiohttp session (and the in-flight limit) opened on first use in each event
    loop. `timeout` is the longest silence allowed from the server, in seconds."""

    def __init__(
        self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
        max_retries: int = 6, backoff: float = 0.5, max_backoff: float = 30.0, connections: int = 256,
        stream: bool = True,
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
        self.stream = stream
        self.usage = Usage()
        key = os.environ.get(api_key_env)
        self._secrets = [key] if key else []
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limit: AdaptiveLimit | None = None
        self._limit_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                headers=self._headers, connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout),
            )
        return self._session

    @property
    def limit(self) -> AdaptiveLimit:
        """The in-flight limit of the current event loop."""
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit_loop is not loop:
            self._limit_loop = loop
            self._limit = AdaptiveLimit(self.connections)
        return self._limit

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, endpoint: str, payload: dict[str, Any], stream: bool = False) -> dict[str, Any]:
        """POST `payload` to the endpoint, retrying what can be retried; the answer as one JSON object (a
        streamed answer is assembled into the shape of an unstreamed one)."""
        url = api_url(self.base_url, endpoint)
        if stream:
            payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        problem = ""
        limit = self.limit
        for attempt in range(self.max_retries + 1):
            wait = 0.0
            async with limit.slot() as epoch:
                try:
                    answer = await self._attempt(url, payload, stream)
                    limit.answered()
                    return answer
                except _Retriable as exc:
                    problem, wait = exc.problem, exc.wait
                    if exc.timed_out:
                        limit.timed_out(epoch)
            if attempt < self.max_retries:
                await asyncio.sleep(max(wait, backoff_delay(attempt, self.backoff, self.max_backoff)))
        raise BackendError(f"{url}: failed after {self.max_retries + 1} attempts; last: {problem}")

    async def _attempt(self, url: str, payload: dict[str, Any], stream: bool) -> dict[str, Any]:
        """One request: the answer, or `_Retriable`, or BackendError for an answer no retry can change."""
        try:
            async with self._client().post(url, json=payload) as response:
                if response.status != 200:
                    text = self.redact((await response.text(errors="replace"))[:300])
                    problem = f"HTTP {response.status}: {text}"
                    if response.status in RETRIABLE_STATUS:
                        raise _Retriable(problem, _retry_after(response.headers.get("Retry-After"), self.max_backoff))
                    hint = f" (is ${self.api_key_env} set?)" if response.status in (401, 403) else ""
                    raise BackendError(f"{url}: {problem}{hint}")
                if stream and response.content_type == "text/event-stream":
                    return await self._read_events(url, response)
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            text = self.redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            if isinstance(exc, TimeoutError):
                text += f" (no data from the server for {self.timeout:g} s)"
            raise _Retriable(text, timed_out=isinstance(exc, TimeoutError)) from None
        try:
            answer = json.loads(body)
        except ValueError as exc:  # a 200 whose body is not JSON
            raise BackendError(f"{url}: answer is not JSON ({exc})") from None
        if not isinstance(answer, dict):
            raise BackendError(f"{url}: answer is not a JSON object")
        return answer

    async def _read_events(self, url: str, response: aiohttp.ClientResponse) -> dict[str, Any]:
        """A streamed completion's `data:` events merged into one answer: the text of choice 0, its finish
        reason, and the usage the last event reports."""
        text: list[str] = []
        finish_reason = None
        usage: dict[str, Any] = {}
        done = False
        async for raw in response.content:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise BackendError(f"{url}: streamed event is not JSON ({exc})") from None
            if event.get("error"):
                raise _Retriable(f"error in the stream: {self.redact(json.dumps(event['error'])[:300])}")
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                text.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
                finish_reason = choice.get("finish_reason") or finish_reason
        if not done and finish_reason is None:
            raise _Retriable("the stream ended before the completion did")
        joined = "".join(text)
        return {"choices": [{"index": 0, "text": joined, "message": {"role": "assistant", "content": joined},
                             "finish_reason": finish_reason}], "usage": usage}

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
        answer = await self.post("chat/completions", payload, stream=self.stream)
        return self._completion(answer, "chat/completions", chat=True)

    async def complete(self, prompt: str, sampling: Sampling) -> Completion:
        """One plain-text completion (/v1/completions), for base models."""
        payload = {**request_body(self.model, sampling), "prompt": prompt}
        return self._completion(await self.post("completions", payload, stream=self.stream), "completions", chat=False)


def _retry_after(value: str | None, cap: float) -> float:
    try:
        return min(cap, float(value)) if value else 0.0
    except ValueError:
        return 0.0
