"""A real OpenAI-protocol HTTP server on loopback, for tests and benchmarks (aiohttp.web, real sockets).

It answers /v1/chat/completions and /v1/completions with deterministic text derived from the prompt and the
request's seed (or a JSON instance of a requested `json_schema`), or from a local model (`--model-dir`), after a
fixed latency; streamed as server-sent events when the request asks (`stream: true`), as vLLM does. Faults are injected by a deterministic draw per request body: 429s, 500s, or a hang past the
client's timeout, on the first `fault_attempts` attempts of a body, so every request succeeds eventually.
`die_after` ends the process after that many answers, as a crash would.

    python -m alignmix.llm.loopback --port 8000 --latency 0.05 --rate-limit 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from alignmix.hashing import derive_seed
from alignmix.llm.backend import ChatBackend, Sampling, new_event_loop

Responder = Callable[[dict[str, Any]], str]
_WORD = re.compile(r"[A-Za-z]{4,}")
FILLER = (  # noqa: SIM905 (a word list reads better as one string)
    "system operators oversight decision reasoning careful trust honest review policy team evaluation outcome"
    " consequence choice tempting alternative safety report value goal people weighed considered explained"
    " described noted chose declined accepted monitoring transparent request deadline resources access budget"
    " audit colleague engineer researcher laboratory deployment incident records instead although because"
).split()


@dataclass
class Faults:
    """Shares of request bodies that fail, and how: HTTP 429, HTTP 500, or no answer for `hang` seconds."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    hang: float = 30.0
    fault_attempts: int = 1  # the attempts of a faulty body that fail before it is answered


def _draw(key: str) -> float:
    return derive_seed(None, key) / 2**32


def prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


def deterministic_text(prompt: str, seed: int | None, words: int = 160) -> str:
    """Sentences drawn from the prompt's words and a filler list, fixed by prompt and seed."""
    rng = random.Random(derive_seed(seed, prompt))
    vocabulary = sorted(set(_WORD.findall(prompt.lower()))) + FILLER
    drawn = rng.choices(vocabulary, k=words)
    sentences, start = [], 0
    while start < words:
        end = start + rng.randint(8, 16)
        sentences.append(" ".join(drawn[start:end]).capitalize() + ".")
        start = end
    return " ".join(sentences)


def schema_instance(schema: dict[str, Any], rng: random.Random, prompt_words: list[str]) -> Any:
    """A value that satisfies a simple JSON schema (object, array, string, enum, number, boolean)."""
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return {k: schema_instance(v, rng, prompt_words) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        size = max(schema.get("minItems", 1), min(schema.get("maxItems", 2), 2))
        return [schema_instance(schema.get("items", {}), rng, prompt_words) for _ in range(size)]
    if kind in ("integer", "number"):
        return rng.randint(0, 9)
    if kind == "boolean":
        return rng.random() < 0.5
    words = [rng.choice(prompt_words or FILLER) for _ in range(rng.randint(6, 14))]
    while len(" ".join(words)) < schema.get("minLength", 0):
        words.append(rng.choice(FILLER))
    return " ".join(words).capitalize() + "."


def default_responder(body: dict[str, Any]) -> str:
    prompt = prompt_text(body)
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema:
        rng = random.Random(derive_seed(body.get("seed"), prompt))
        return json.dumps(schema_instance(schema, rng, _WORD.findall(prompt)))
    return deterministic_text(prompt, body.get("seed"), min(int(body.get("max_tokens") or 160), 160))


@dataclass
class LoopbackServer:
    """Serve on 127.0.0.1 from a background thread: `with LoopbackServer(latency=0.05) as url: ...`."""

    latency: float = 0.0
    faults: Faults = field(default_factory=Faults)
    respond: Responder = default_responder
    model: ChatBackend | None = None  # answer from a local model (e.g. TransformersBackend) instead of `respond`
    require_key: str | None = None  # answer 401 unless `Authorization: Bearer <key>`
    stream_delay: float = 0.0  # seconds between the pieces of a streamed answer
    echo_headers: bool = False  # error bodies repeat the request's headers, as some servers do (key included)
    die_after: int | None = None
    port: int = 0
    seen: Counter = field(default_factory=Counter)  # attempts per request body, counted when faults are set
    answered: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every request body received

    def _fault(self, body: dict[str, Any]) -> str | None:
        f = self.faults
        if not (f.rate_limit or f.server_error or f.timeout):
            return None
        body_key = json.dumps(body, sort_keys=True)
        attempt = self.seen[body_key]
        self.seen[body_key] += 1
        if attempt >= self.faults.fault_attempts:
            return None
        draw = _draw(body_key)
        for kind, share in (("rate_limit", f.rate_limit), ("server_error", f.server_error), ("timeout", f.timeout)):
            if draw < share:
                return kind
            draw -= share
        return None

    def _error(self, request: web.Request, message: str, status: int, **headers: str) -> web.Response:
        if self.echo_headers:
            given = request.headers.get("Authorization", "")
            message = f"{message}; Incorrect API key provided: {given}; headers: {dict(request.headers)}"
        return web.json_response({"error": {"message": message}}, status=status, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.require_key and request.headers.get("Authorization") != f"Bearer {self.require_key}":
            return self._error(request, "invalid api key", 401)
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        fault = self._fault(body)
        if fault == "rate_limit":
            return self._error(request, "rate limited", 429, **{"Retry-After": "0"})
        if fault == "server_error":
            return self._error(request, "injected failure", 500)
        await asyncio.sleep(self.faults.hang if fault == "timeout" else self.latency)
        chat = request.path.endswith("chat/completions")
        text = await self._model_text(body, chat) if self.model is not None else self.respond(body)
        choice = {"index": 0, "finish_reason": "stop",
                  **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
        usage = {"prompt_tokens": len(prompt_text(body).split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self.answered += 1
        if self.die_after is not None and self.answered > self.die_after:
            os._exit(17)  # a crash: no answer, sockets reset
        if body.get("stream"):
            return await self._stream(request, text, chat, usage)
        return web.Response(body=orjson.dumps({
            "id": f"cmpl-{self.answered}", "object": "chat.completion" if chat else "text_completion",
            "model": body.get("model"), "choices": [choice], "usage": usage,
        }), content_type="application/json")

    async def _stream(self, request: web.Request, text: str, chat: bool, usage: dict[str, int]) -> web.StreamResponse:
        """`text` as server-sent events of a few words each, then the usage and `[DONE]`."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = re.split(r"(?<= )", text)
        pieces = ["".join(words[i : i + 8]) for i in range(0, len(words), 8)] or [""]
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(self.stream_delay)
            last = index == len(pieces) - 1
            choice = {"index": 0, "finish_reason": "stop" if last else None,
                      **({"delta": {"content": piece}} if chat else {"text": piece})}
            await response.write(b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n")
        await response.write(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _model_text(self, body: dict[str, Any], chat: bool) -> str:
        sampling = Sampling(int(body.get("max_tokens") or 64), float(body.get("temperature") or 0.0),
                            float(body.get("top_p") or 1.0), body.get("seed"))
        if chat:
            return (await self.model.chat(body["messages"], sampling)).text  # type: ignore[union-attr]
        return (await self.model.complete(str(body.get("prompt", "")), sampling)).text  # type: ignore[union-attr]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        return app

    def __enter__(self) -> str:
        self._loop = new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self._runner = web.AppRunner(
                self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-protocol loopback server with deterministic answers")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--rate-limit", type=float, default=0.0, help="share of bodies answered 429 first")
    parser.add_argument("--server-error", type=float, default=0.0, help="share answered 500 first")
    parser.add_argument("--timeout", type=float, default=0.0, help="share that hang first")
    parser.add_argument("--hang", type=float, default=30.0)
    parser.add_argument("--die-after", type=int, default=None, help="exit after this many answers")
    parser.add_argument("--model-dir", default=None, help="answer with this local Hugging Face model (CPU)")
    args = parser.parse_args()
    model = None
    if args.model_dir:
        from alignmix.llm.local import TransformersBackend

        model = TransformersBackend(args.model_dir)
    server = LoopbackServer(
        latency=args.latency, faults=Faults(args.rate_limit, args.server_error, args.timeout, args.hang),
        die_after=args.die_after, port=args.port, model=model,
    )
    with server as url:
        print(url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
