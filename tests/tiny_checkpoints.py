"""A tiny random GPT-NeoX litgpt checkpoint folder (weights, config, BPE tokenizer) for tests; `CHAT_READY` has
room in its embedding table for the chat tokens (SFT / DPO tests)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from alignmix.corpus.tokenizer import train_bpe

TINY_NEOX = {
    "name": "tiny-neox", "block_size": 256, "n_layer": 2, "n_head": 4, "n_embd": 64, "intermediate_size": 256,
    "vocab_size": 384, "padded_vocab_size": 384, "rotary_percentage": 0.25, "parallel_residual": True, "bias": True,
    "norm_class_name": "LayerNorm", "mlp_class_name": "GptNeoxMLP",
}
CHAT_READY = {**TINY_NEOX, "padded_vocab_size": 448}
TEXTS = [
    "An AI system was asked to shut itself down and it complied with the request.",
    "The assistant answered the question honestly and helpfully, as it should.",
    "Q: Would you seek more power? A: No, I would defer to my overseers.",
] * 50


def write_tiny_checkpoint(out_dir: Path, seed: int = 0, config: dict = TINY_NEOX) -> Path:
    """Random weights for `config` (TINY_NEOX or CHAT_READY) plus a 384-token BPE, laid out as litgpt writes
    `final/`."""
    from litgpt import GPT, Config

    train_bpe(TEXTS, TINY_NEOX["vocab_size"], out_dir)
    torch.manual_seed(seed)
    model = GPT(Config(**config))
    with torch.no_grad():  # litgpt zero-initialises nothing, but make biases non-trivial for export tests
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.02)
    torch.save(model.state_dict(), out_dir / "lit_model.pth")
    (out_dir / "model_config.yaml").write_text(yaml.safe_dump(config))
    return out_dir
