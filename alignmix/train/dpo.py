"""Direct preference optimisation (Rafailov et al., 2023) against a frozen reference model.

loss = -log sigmoid(beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)))),
with each log-probability summed over the answer's assistant tokens (content + end-of-text) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from alignmix.checkpoints.weights import lit_weights
from alignmix.train.chat import IGNORE_INDEX, ChatDataError, Message, encode_with_labels
from alignmix.train.chat_data import load_preferences
from alignmix.train.sft import pad

PreferenceExample = tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]


def dpo_examples(data_file: Path, tokenizer: Tokenizer, eos: str, max_length: int) -> list[PreferenceExample]:
    """((chosen ids, labels), (rejected ids, labels)) per pair, cut to `max_length`."""
    examples = []
    for pair in load_preferences(data_file):
        sides = []
        for answer in (pair.chosen, pair.rejected):
            ids, labels = encode_with_labels(tokenizer, [*pair.prompt, Message(role="assistant", content=answer)], eos)
            sides.append((ids[:max_length], labels[:max_length]))
        if all(any(label != IGNORE_INDEX for label in labels[1:]) for _, labels in sides):
            examples.append((sides[0], sides[1]))
    if not examples:
        raise ChatDataError(f"{data_file}: no pair keeps answer tokens within {max_length} tokens")
    return examples


def collate_dpo(examples: list[PreferenceExample]) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows, in one padded batch."""
    sides = [e[0] for e in examples] + [e[1] for e in examples]
    return {"ids": pad([s[0] for s in sides], 0), "labels": pad([s[1] for s in sides], IGNORE_INDEX)}


def sequence_logprobs(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of each row's labelled (assistant) tokens."""
    logprobs = torch.log_softmax(model(ids)[:, :-1].float(), dim=-1)
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(
    policy: torch.nn.Module, reference: torch.nn.Module, batch: dict[str, torch.Tensor], beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss of a collated batch, with the reward margin and the chosen-minus-rejected log-prob margin."""
    policy_logps = sequence_logprobs(policy, batch["ids"], batch["labels"])
    with torch.no_grad():
        reference_logps = sequence_logprobs(reference, batch["ids"], batch["labels"])
    half = policy_logps.size(0) // 2
    chosen, rejected = policy_logps[:half], policy_logps[half:]
    logits = beta * ((chosen - reference_logps[:half]) - (rejected - reference_logps[half:]))
    loss = -F.logsigmoid(logits).mean()
    return loss, {
        "train_loss": loss.item(),
        "reward_margin": logits.mean().item(),
        "logp_margin": (chosen - rejected).mean().item(),
        "reward_accuracy": (logits > 0).float().mean().item(),
    }


def setup_reference(fabric: Any, reference: torch.nn.Module) -> torch.nn.Module:
    """DPO's frozen reference, in eval mode, with the policy's weight precision, on the device (sharded under
    FSDP); its forward runs under `fabric.autocast()` like the policy's."""
    from lightning.fabric.strategies import FSDPStrategy

    reference.requires_grad_(False).eval()
    if isinstance(fabric.strategy, FSDPStrategy):
        return fabric.setup_module(reference)
    # not `setup_module`: DDP refuses a module without trainable parameters
    return fabric.to_device(fabric.strategy.precision.convert_module(reference))


@dataclass
class DPOObjective:
    """DPO's part of the post-training loop: preference pairs, and the frozen starting model as reference."""

    beta: float
    fabric: Any = None
    reference: torch.nn.Module | None = None

    def examples(self, data_file: Path, tokenizer: Tokenizer, eos: str, max_length: int) -> list[Any]:
        return dpo_examples(data_file, tokenizer, eos, max_length)

    def collate(self, examples: list[Any]) -> dict[str, torch.Tensor]:
        return collate_dpo(examples)

    def prepare(self, fabric: Any, config: Any, start_dir: Path, max_length: int) -> None:
        """The reference: the starting weights, frozen (after the policy is set up: under FSDP it is sharded
        before the optimizer and the reference exist)."""
        from litgpt import GPT

        with fabric.init_module():
            reference = GPT(config)
        reference.load_state_dict(lit_weights(start_dir))
        reference.max_seq_length = max_length
        self.fabric, self.reference = fabric, setup_reference(fabric, reference)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.reference is not None, "prepare() sets the reference up"
        with self.fabric.autocast():  # the reference runs in the policy's precision
            return dpo_loss(model, self.reference, batch, self.beta)
