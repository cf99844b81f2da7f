"""A tiny litgpt checkpoint with room in its embedding table for the chat tokens, for SFT / DPO tests."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from alignmix.corpus.tokenizer import train_bpe
from checkpoints import TEXTS, TINY_NEOX

CHAT_READY = {**TINY_NEOX, "padded_vocab_size": 448}


def write_chat_ready_checkpoint(out_dir: Path, config: dict = CHAT_READY, seed: int = 0) -> Path:
    """Random weights for a 2-layer GPT-NeoX with a 384-token BPE; `config` sets the embedding rows."""
    from litgpt import GPT, Config

    train_bpe(TEXTS, TINY_NEOX["vocab_size"], out_dir)
    torch.manual_seed(seed)
    torch.save(GPT(Config(**config)).state_dict(), out_dir / "lit_model.pth")
    (out_dir / "model_config.yaml").write_text(yaml.safe_dump(config))
    return out_dir
