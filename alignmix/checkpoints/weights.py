"""Reading the weights of a litgpt checkpoint folder."""

from __future__ import annotations

from pathlib import Path

import torch


def lit_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """`lit_model.pth` as a state dict (stored raw, or as litgpt's {"model": ...}); memory-mapped, weights_only."""
    state = torch.load(Path(checkpoint_dir) / "lit_model.pth", map_location="cpu", weights_only=True, mmap=True)
    return state.get("model", state)
