"""A local transformers model as a `ChatBackend`, on the CPU: for small runs, tests and checks without a server.

The conversation is rendered with the folder's own chat template when it has one (system turns folded into the
user turn where the template has no system role), else with alignmix's, as SFT and DPO write it.
Generation runs in a worker thread, one request at a time (a CPU model gains nothing from concurrent calls).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignmix.llm.backend import BackendError, Completion, Message, Sampling
from alignmix.llm.chat_template import ChatTemplate


class TransformersBackend:
    def __init__(self, model: str, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(model).is_dir():
            raise BackendError(f"{model}: not a folder; the transformers backend takes a local Hugging Face model folder")
        self.model = model
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.network = AutoModelForCausalLM.from_pretrained(model).to(device).eval()
        self.device = device
        own = ChatTemplate.from_folder(Path(model))
        self.template = own or ChatTemplate.alignmix(self.tokenizer.eos_token or "")
        which = "the model's own chat template" if own else "alignmix's chat template (the model has none)"
        self.prompting = f"{which}: {self.template.describe_persona()}, question as the user turn"
        self._lock = threading.Lock()  # not asyncio's: the backend may serve several event loops in turn

    def render(self, messages: Sequence[Message]) -> str:
        return self.template.render(list(messages))

    def _generate(self, prompt: str, sampling: Sampling) -> Completion:
        with self._lock:
            return self._generate_locked(prompt, sampling)

    def _generate_locked(self, prompt: str, sampling: Sampling) -> Completion:
        import torch

        inputs = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        context = getattr(self.network.config, "max_position_embeddings", None) or prompt_tokens + sampling.max_tokens
        if prompt_tokens >= context:
            raise BackendError(f"{self.model}: a prompt of {prompt_tokens} tokens does not fit the model's {context}")
        max_new = min(sampling.max_tokens, context - prompt_tokens)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        eos = self.tokenizer.eos_token_id
        sample = sampling.temperature > 0
        with torch.no_grad():
            output = self.network.generate(
                **inputs, max_new_tokens=max_new, do_sample=sample,
                temperature=sampling.temperature if sample else None, top_p=sampling.top_p if sample else None,
                pad_token_id=eos if eos is not None else 0,
            )
        new = output[0, prompt_tokens:].tolist()
        stopped = eos is not None and bool(new) and new[-1] == eos
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True), prompt_tokens=prompt_tokens,
            completion_tokens=len(new), finish_reason="stop" if stopped or len(new) < max_new else "length",
        )

    async def chat(
        self, messages: Sequence[Message], sampling: Sampling, extra: dict[str, Any] | None = None
    ) -> Completion:
        """`extra` request fields (e.g. `response_format`) have no local equivalent and are ignored."""
        return await self.complete(self.render(messages), sampling)

    async def complete(self, prompt: str, sampling: Sampling) -> Completion:
        return await asyncio.to_thread(self._generate, prompt, sampling)

    async def aclose(self) -> None:
        return None
