"""Log-likelihood scoring of continuations with a litgpt checkpoint or a transformers folder, batched.

Requests are tokenized the way lm-evaluation-harness does (trailing context whitespace moves into the
continuation; the continuation's tokens are those of `context + continuation` after the context's), so the
numbers equal the harness's; a chat reply (`ScoreRequest.reply`) keeps the template's newline in the context
and is tokenized on its own. Requests with the same context share one forward pass whenever one's model input
(`context + continuation[:-1]`) starts with the other's: the two option letters after one prompt cost one pass,
read off the last position's distribution (or, where a letter takes two tokens, such as " B" = "Ġ" + "B", off
the last two positions of the longer input). The language-model head runs only at the scored positions.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from alignmix.checkpoints.weights import check_model_folder, lit_weights
from alignmix.jsonl import read_json
from alignmix.errors import AlignmixError
from alignmix.progress import StageProgress


class ScorerError(AlignmixError):
    """A model folder that cannot be scored: the message names the folder and what is missing."""


@dataclass
class ScoreRequest:
    context: str
    continuation: str
    reply: bool = False  # a chat reply: the context (ending in the template's `<|assistant|>\n`) keeps its
    # trailing whitespace and the continuation is tokenized on its own, as training tokenized assistant turns


@dataclass
class Score:
    logprob: float
    tokens: int
    truncated: bool
    greedy: bool = False  # every continuation token is the model's most likely next token


@dataclass
class _Encoded:
    context: list[int]
    continuation: list[int]
    truncated: bool

    @property
    def model_input(self) -> tuple[int, ...]:
        return tuple((self.context + self.continuation)[:-1])


def _default_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class TokenScorer(ABC):
    """The scoring loop shared by the litgpt and transformers scorers; subclasses supply the model parts."""

    max_length: int
    device: torch.device
    prefix_token_id: int | None = None

    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""

    @abstractmethod
    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final-layer hidden states (after the last norm), shape (batch, time, width)."""

    @abstractmethod
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from hidden states at the scored positions."""

    def _encode(self, requests: Sequence[ScoreRequest]) -> list[_Encoded]:
        pairs = [lm_eval_split(request) for request in requests]
        contexts = sorted({c for c, _ in pairs})
        context_ids = dict(zip(contexts, self.encode_batch(contexts)))
        wholes = self.encode_batch([x if r.reply else c + x for (c, x), r in zip(pairs, requests)])
        encoded = []
        for (context, _), whole, request in zip(pairs, wholes, requests):
            ctx = context_ids[context]
            continuation = whole if request.reply else whole[len(ctx):]
            if not ctx:
                if self.prefix_token_id is None:
                    raise ScorerError("an empty context needs a BOS or EOS token in the tokenizer")
                ctx = [self.prefix_token_id]
            if not continuation or len(continuation) > self.max_length:
                raise ScorerError(f"continuation of {len(continuation)} tokens after context ending {context[-40:]!r};"
                                  f" expected 1 to {self.max_length}")
            keep = self.max_length + 1 - len(continuation)
            truncated = len(ctx) > keep
            encoded.append(_Encoded(ctx[-keep:] if truncated else ctx, continuation, truncated))
        return encoded

    @staticmethod
    def _shared_rows(encoded: list[_Encoded]) -> list[tuple[tuple[int, ...], list[int]]]:
        """Model inputs to run and the requests each serves: a request rides on any row of the same context whose
        input starts with its own input (causal attention: later tokens do not change earlier positions)."""
        by_context: dict[tuple[int, ...], list[int]] = {}
        for index, item in enumerate(encoded):
            by_context.setdefault(tuple(item.context), []).append(index)
        rows: list[tuple[tuple[int, ...], list[int]]] = []
        for members in by_context.values():
            group: list[tuple[tuple[int, ...], list[int]]] = []
            for index in sorted(members, key=lambda i: -len(encoded[i].continuation)):
                wanted = encoded[index].model_input
                host = next((row for row in group if row[0][: len(wanted)] == wanted), None)
                if host is None:
                    group.append((wanted, [index]))
                else:
                    host[1].append(index)
            rows += group
        return rows

    @torch.inference_mode()
    def score(self, requests: list[ScoreRequest], batch_size: int = 32, label: str | None = None) -> list[Score]:
        """Sum of log-probabilities of each continuation's tokens after its context (one pass per shared input);
        with a `label`, the sequences scored show as progress (`alignmix.progress`)."""
        encoded = self._encode(requests)
        ordered = sorted(self._shared_rows(encoded), key=lambda row: -len(row[0]))
        scores: list[Score | None] = [None] * len(encoded)
        progress = StageProgress(label, len(ordered), "sequences") if label else None
        for start in range(0, len(ordered), batch_size):
            if progress is not None and start:
                progress.update(start)
            batch = ordered[start : start + batch_size]
            length = max(len(inp) for inp, _ in batch)
            ids = torch.zeros((len(batch), length), dtype=torch.long)
            mask = torch.zeros((len(batch), length), dtype=torch.long)
            for row, (inp, _) in enumerate(batch):
                ids[row, : len(inp)] = torch.tensor(inp)
                mask[row, : len(inp)] = 1
            hidden = self.hidden_states(ids.to(self.device), mask.to(self.device))
            row_index, positions, owners = [], [], []
            for row, (_, members) in enumerate(batch):
                for member in members:
                    item = encoded[member]
                    start_pos = len(item.context) - 1
                    row_index += [row] * len(item.continuation)
                    positions += range(start_pos, start_pos + len(item.continuation))
                    owners.append((member, len(item.continuation)))
            logits = self.head(hidden[torch.tensor(row_index), torch.tensor(positions)]).float()
            logprobs = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor([t for member, _ in owners for t in encoded[member].continuation], device=logits.device)
            picked = logprobs.gather(1, targets[:, None])[:, 0]
            greedy = logprobs.argmax(dim=-1) == targets
            offset = 0
            for member, count in owners:
                value = picked[offset : offset + count].sum().item()
                is_greedy = bool(greedy[offset : offset + count].all())
                scores[member] = Score(value, count, encoded[member].truncated, is_greedy)
                offset += count
        if progress is not None:
            progress.update(len(ordered))
            progress.close()
        return [s for s in scores if s is not None]


def _cpu_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype | None:
    """On the CPU, half-precision checkpoints are scored in float32 unless asked otherwise: exact, and faster on a
    CPU without bf16 units (with AMX, as on the development machine, bfloat16 scores 2.5 times faster)."""
    return dtype or (torch.float32 if device.type == "cpu" else None)


class LitCheckpointScorer(TokenScorer):
    """Loads `lit_model.pth` + `model_config.yaml` + tokenizer from a litgpt checkpoint folder."""

    def __init__(self, checkpoint_dir: Path, device: str | None = None, dtype: torch.dtype | None = None):
        from litgpt import GPT, Config, Tokenizer
        from litgpt.model import do_softcapping


        checkpoint_dir = Path(checkpoint_dir)
        for required in ("lit_model.pth", "model_config.yaml"):
            if not (checkpoint_dir / required).is_file():
                raise ScorerError(f"{checkpoint_dir}: not a litgpt checkpoint folder (no {required})")
        check_model_folder(checkpoint_dir)
        self.device = _default_device(device)
        config = Config.from_file(checkpoint_dir / "model_config.yaml")
        self.model = GPT(config)
        self.model.load_state_dict(lit_weights(checkpoint_dir))
        target = _cpu_dtype(self.device, dtype)
        self.model.to(device=self.device, dtype=target).eval()
        self.model.max_seq_length = config.block_size
        self.max_length = config.block_size
        self._lm_head = self.model.lm_head
        self.model.lm_head = torch.nn.Identity()  # forward() then returns final hidden states
        cap = config.final_logit_softcapping
        config.final_logit_softcapping = None  # forward() would soft-cap the hidden states; head() caps the logits once
        self._cap: Callable[[torch.Tensor], torch.Tensor] = (
            (lambda x: do_softcapping(x, cap)) if cap is not None else (lambda x: x)
        )
        self.tokenizer = Tokenizer(checkpoint_dir)
        self.prefix_token_id = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.tokenizer.backend == "huggingface":
            return [e.ids for e in self.tokenizer.processor.encode_batch(list(texts), add_special_tokens=False)]
        return [self.tokenizer.encode(t, bos=False, eos=False).tolist() for t in texts]

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(ids)  # causal attention: right padding never reaches a real position

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._cap(self._lm_head(hidden))


class HFScorer(TokenScorer):
    """A transformers causal LM folder (`config.json`, weights, tokenizer), e.g. written by `export_hf`."""

    def __init__(self, model_dir: Path, device: str | None = None, dtype: torch.dtype | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ScorerError(f"{model_dir}: not a transformers model folder (no config.json)")
        check_model_folder(model_dir)
        self.device = _default_device(device)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_cpu_dtype(self.device, dtype) or "auto")
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = self.model.config
        self.max_length = next(  # as lm-evaluation-harness reads a model's window, 2048 when none is stated
            (getattr(config, k) for k in ("n_positions", "max_position_embeddings", "n_ctx") if getattr(config, k, None)),
            2048)
        self.prefix_token_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        self._scale = getattr(config, "logit_scale", None)
        self._cap = getattr(config, "final_logit_softcapping", None)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)
        if self._scale is not None:
            logits = logits * self._scale
        if self._cap is not None:
            logits = torch.tanh(logits / self._cap) * self._cap
        return logits


def lm_eval_split(request: ScoreRequest) -> tuple[str, str]:
    """(context, continuation) as lm-evaluation-harness splits them: a plain context's trailing whitespace moves
    into the continuation; a chat reply keeps the template's newline in its context."""
    context, continuation = request.context, request.continuation
    spaces = len(context) - len(context.rstrip())
    if spaces and not request.reply:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    return context, continuation


class ServerScorer:
    """Scores through an OpenAI-compatible server's prompt log-probabilities (vLLM: `alignmix.llm.logprobs`);
    `score` takes and returns what `TokenScorer.score` does (the server truncates nothing: a prompt longer than
    its window is an error)."""

    def __init__(self, base_url: str, model_name: str, concurrency: int = 16):
        from alignmix.llm.openai_compat import OpenAIClient

        self.client = OpenAIClient(base_url, model_name, connections=concurrency, stream=False)
        self.concurrency = concurrency

    def score(self, requests: list[ScoreRequest], batch_size: int = 32) -> list[Score]:
        from alignmix.llm.logprobs import score_continuations

        found = score_continuations(self.client, [lm_eval_split(r) for r in requests], self.concurrency)
        return [Score(f.logprob, f.tokens, False, f.greedy) for f in found]


def model_folder_kind(path: Path) -> str:
    """`litgpt` or `hf` by the files in the folder; raises ScorerError naming what was expected."""
    path = Path(path)
    if (path / "lit_model.pth").is_file():
        return "litgpt"
    if (path / "config.json").is_file():
        return "hf"
    raise ScorerError(f"{path}: neither a litgpt checkpoint (lit_model.pth) nor a transformers folder (config.json)")


def open_scorer(path: Path, device: str | None = None) -> TokenScorer:
    """A scorer for a litgpt checkpoint folder or a transformers folder."""
    return LitCheckpointScorer(path, device) if model_folder_kind(path) == "litgpt" else HFScorer(path, device)


def describe_model(path: Path) -> dict[str, str]:
    """What results.json records about a model folder."""
    kind = model_folder_kind(path)
    info = {"path": str(path), "kind": kind}
    if kind == "hf":
        info["architecture"] = ",".join(read_json(Path(path) / "config.json", "a transformers config")
                                        .get("architectures", []))
    return info
