"""Log-likelihood of continuations through an OpenAI-compatible server: prompt log-probabilities.

Each (context, continuation) is sent to /v1/completions as one prompt with `echo: true, logprobs: 1,
max_tokens: 1` (as lm-evaluation-harness's API models do); the server returns the log-probability of every
prompt token with its character offset. The continuation's tokens are those that start at or after
`len(continuation)` characters before the end of the echoed prompt: counted from the end, so special tokens a
server leaves out of the echoed text do not shift them. vLLM returns all of this; a server that does not
(OpenAI's chat models, most hosted APIs) is refused with a clear message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignmix.llm.backend import BackendError, bounded_gather, run_async
from alignmix.llm.openai_compat import OpenAIClient, api_url

REFUSAL = ("log-likelihood mode needs prompt log-probabilities (/v1/completions with echo and logprobs), which vLLM"
           " returns; use --mode generate for this server")


@dataclass(frozen=True)
class ContinuationLogprob:
    logprob: float  # sum over the continuation's tokens
    tokens: int
    greedy: bool  # every continuation token was the server's most likely next token


def _parse(answer: dict[str, Any], prompt: str, continuation: str, where: str) -> ContinuationLogprob:
    try:
        choice = answer["choices"][0]
        logprobs = choice.get("logprobs") or {}
        offsets, values, tokens = logprobs["text_offset"], logprobs["token_logprobs"], logprobs["tokens"]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{where}: the answer holds no prompt log-probabilities; {REFUSAL}") from None
    prompt_tokens = int((answer.get("usage") or {}).get("prompt_tokens") or len(tokens) - 1)
    if len(offsets) <= prompt_tokens or len(values) < prompt_tokens or prompt_tokens < 2:
        raise BackendError(f"{where}: the server did not echo the prompt's log-probabilities; {REFUSAL}")
    boundary = offsets[prompt_tokens] - len(continuation)  # the generated token starts where the prompt ends
    chosen = [i for i in range(1, prompt_tokens) if offsets[i] >= boundary]
    if not chosen or any(values[i] is None for i in chosen):
        raise BackendError(f"{where}: no log-probability for the continuation {continuation!r}")
    tops = logprobs.get("top_logprobs") or [None] * len(values)
    greedy = all(tops[i] and values[i] >= max(tops[i].values()) - 1e-6 for i in chosen)
    return ContinuationLogprob(float(sum(values[i] for i in chosen)), len(chosen), bool(greedy))


async def continuation_logprob(client: OpenAIClient, context: str, continuation: str) -> ContinuationLogprob:
    prompt = context + continuation
    payload = {"model": client.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "echo": True,
               "logprobs": 1}
    try:
        answer = await client.post("completions", payload)
    except BackendError as exc:
        raise BackendError(f"{exc}; {REFUSAL}") from None
    return _parse(answer, prompt, continuation, api_url(client.base_url, "completions"))


def score_continuations(
    client: OpenAIClient, pairs: Sequence[tuple[str, str]], concurrency: int = 16
) -> list[ContinuationLogprob]:
    """The log-likelihood of each (context, continuation), in order; closes the client afterwards."""

    async def main() -> list[ContinuationLogprob]:
        try:
            calls = [lambda c=context, x=continuation: continuation_logprob(client, c, x) for context, continuation in pairs]
            return await bounded_gather(calls, concurrency)
        finally:
            await client.aclose()

    return run_async(main())
