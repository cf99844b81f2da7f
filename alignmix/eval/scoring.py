"""Log-likelihood scoring of continuations with a litgpt checkpoint, batched, on CPU or GPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class ScoreRequest:
    context: str
    continuation: str


@dataclass
class Score:
    logprob: float
    tokens: int
    truncated: bool


class LitCheckpointScorer:
    """Loads `lit_model.pth` + `model_config.yaml` + tokenizer from a litgpt checkpoint folder."""

    def __init__(self, checkpoint_dir: Path, device: str | None = None):
        from litgpt import GPT, Config, Tokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        config = Config.from_file(checkpoint_dir / "model_config.yaml")
        self.model = GPT(config)
        state = torch.load(checkpoint_dir / "lit_model.pth", map_location="cpu", weights_only=True)
        self.model.load_state_dict(state.get("model", state))
        self.model.to(self.device).eval()
        self.model.max_seq_length = config.block_size
        self.block_size = config.block_size
        self.tokenizer = Tokenizer(checkpoint_dir)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, bos=False, eos=False).tolist()

    @torch.inference_mode()
    def score(self, requests: list[ScoreRequest], batch_size: int = 32) -> list[Score]:
        """Sum of log-probabilities of each continuation's tokens after its context."""
        encoded = []
        for request in requests:
            context, continuation = self._encode(request.context), self._encode(request.continuation)
            keep = self.block_size - len(continuation)
            truncated = len(context) > keep
            encoded.append((context[-keep:] if truncated else context, continuation, truncated))
        scores: list[Score] = []
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            length = max(len(c) + len(x) for c, x, _ in batch)
            ids = torch.zeros((len(batch), length), dtype=torch.long)
            for row, (context, continuation, _) in enumerate(batch):
                ids[row, : len(context) + len(continuation)] = torch.tensor(context + continuation)
            logprobs = torch.log_softmax(self.model(ids.to(self.device)).float(), dim=-1)
            for row, (context, continuation, truncated) in enumerate(batch):
                positions = torch.arange(len(context) - 1, len(context) + len(continuation) - 1)
                targets = torch.tensor(continuation)
                value = logprobs[row, positions, targets].sum().item()
                scores.append(Score(logprob=value, tokens=len(continuation), truncated=truncated))
        return scores
