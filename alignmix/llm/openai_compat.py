"""A client for OpenAI-compatible chat servers (`vllm serve`, or any server speaking /v1/chat/completions).

Requests run concurrently on a thread pool, keep their order, and are retried with exponential backoff
on connection errors, timeouts, 429 and 5xx answers.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

RETRIABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class BackendError(RuntimeError):
    """A request that failed after its retries, or an answer without a completion."""


@dataclass
class ChatClient:
    base_url: str  # e.g. http://127.0.0.1:8000 or http://127.0.0.1:8000/v1
    model: str
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    timeout: float = 120.0
    max_retries: int = 4
    backoff: float = 0.5
    concurrency: int = 16
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            if self.api_key:
                self._local.session.headers["Authorization"] = f"Bearer {self.api_key}"
        return self._local.session

    def complete(self, messages: list[dict[str, str]]) -> str:
        """One chat completion's text."""
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens}
        problem = ""
        for attempt in range(self.max_retries + 1):
            try:
                response = self._session().post(self.url, json=payload, timeout=self.timeout)
                if response.status_code not in RETRIABLE_STATUS:
                    response.raise_for_status()
                    return response.json()["choices"][0]["message"]["content"]
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except (KeyError, IndexError, ValueError) as exc:
                raise BackendError(f"{self.url}: answer without a completion ({exc})") from None
            except requests.HTTPError as exc:
                raise BackendError(f"{self.url}: {exc}") from None
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt)
        raise BackendError(f"{self.url}: failed after {self.max_retries + 1} attempts; last: {problem}")

    def complete_many(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Completions for many conversations, `concurrency` at a time, in the given order."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.complete, conversations))
