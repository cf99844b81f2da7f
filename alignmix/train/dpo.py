"""Direct preference optimisation (Rafailov et al., 2023) against a frozen reference model.

loss = -log sigmoid(beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)))),
with each log-probability summed over the answer's assistant tokens (content + end-of-text) only.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

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
