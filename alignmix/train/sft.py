"""Supervised fine-tuning on chat data: cross-entropy on the assistant tokens only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from alignmix.train.chat import IGNORE_INDEX, ChatDataError, encode_with_labels
from alignmix.train.chat_data import SftFormat, load_sft


def sft_examples(
    data_file: Path, data_format: SftFormat, tokenizer: Tokenizer, eos: str, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) per conversation, cut to `max_length`; refuses data where no assistant token survives."""
    examples = []
    for messages in load_sft(data_file, data_format):
        ids, labels = encode_with_labels(tokenizer, messages, eos)
        ids, labels = ids[:max_length], labels[:max_length]
        if any(label != IGNORE_INDEX for label in labels[1:]):
            examples.append((ids, labels))
    if not examples:
        raise ChatDataError(f"{data_file}: no example keeps an assistant token within {max_length} tokens")
    return examples


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad token rows into one tensor."""
    length = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def collate_sft(examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    return {"ids": pad([e[0] for e in examples], 0), "labels": pad([e[1] for e in examples], IGNORE_INDEX)}


def sft_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean next-token cross-entropy over the batch's assistant tokens."""
    logits = model(batch["ids"])
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
    return loss, {"train_loss": loss.item()}


@dataclass(frozen=True)
class SFTObjective:
    """SFT's part of the post-training loop: conversations in `data_format`, loss on the assistant tokens."""

    data_format: SftFormat

    def examples(self, data_file: Path, tokenizer: Tokenizer, eos: str, max_length: int) -> list[Any]:
        return sft_examples(data_file, self.data_format, tokenizer, eos, max_length)

    def collate(self, examples: list[Any]) -> dict[str, torch.Tensor]:
        return collate_sft(examples)

    def prepare(self, fabric: Any, config: Any, start_dir: Path, max_length: int) -> None:
        """Nothing besides the policy."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_loss(model, batch)
