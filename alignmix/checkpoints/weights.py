"""Reading the files of a model folder: weights, tokenizer and JSON configs, each refused naming the file when it
cannot be read (or, for weights, when they hold a NaN or an infinity)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from alignmix.errors import AlignmixError
from alignmix.jsonl import read_json

JSON_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")


class ModelFileError(AlignmixError):
    """A model folder's file that cannot be read, or weights that are not finite: names the file."""


def load_torch_file(path: Path, **options) -> object:
    """`torch.load(path, weights_only=True)`; a file that is not a PyTorch checkpoint raises ModelFileError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **options)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


def non_finite_values(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The tensors of a state dict holding NaN or infinite values, and how many each holds."""
    counts = {}
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                counts[name] = bad
    return counts


def refuse_non_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise ModelFileError naming `path` when any weight is NaN or infinite (corrupted or diverged)."""
    bad = non_finite_values(state)
    if bad:
        first = ", ".join(f"{name} ({count:,})" for name, count in list(bad.items())[:3])
        raise ModelFileError(f"{path}: {sum(bad.values()):,} weights are NaN or infinite, in {len(bad)} tensors"
                             f" ({first}); the file is damaged or training diverged")


def lit_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """`lit_model.pth` as a state dict (stored raw, or as litgpt's {"model": ...}); memory-mapped, weights_only;
    refused, naming the file, when it is not a checkpoint or holds non-finite weights."""
    path = Path(checkpoint_dir) / "lit_model.pth"
    state = load_torch_file(path, mmap=True)
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    state = state.get("model", state)
    refuse_non_finite(state, path)
    return state


def check_model_folder(folder: Path) -> None:
    """Read a model folder's tokenizer.json and JSON configs where present, so that a damaged one is named here
    rather than failing deep inside litgpt or transformers."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    for name in JSON_FILES:
        if (folder / name).is_file():
            read_json(folder / name, f"the model's {name}")
    tokenizer = folder / "tokenizer.json"
    if tokenizer.is_file():
        try:
            Tokenizer.from_file(str(tokenizer))
        except Exception as exc:  # tokenizers raises a bare Exception for a damaged file
            reason = str(exc).splitlines()[0][:160]
            raise ModelFileError(f"{tokenizer}: not a readable tokenizer ({reason})") from None
