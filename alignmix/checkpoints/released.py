"""A model named the way a recipe's `base_model` names one (`builtin:SmolLM2-135M-Instruct`, a transformers folder,
a litgpt checkpoint folder, a .gguf file), as the folder `alignmix eval`, `capability` and `export` read.

A folder is used as it is. A GGUF file (a builtin's too) is de-quantised once into a transformers folder under
`ALIGNMIX_MODELS` (default `~/.cache/alignmix/models`), named after the file (`SmolLM2-135M-Instruct`), and
reused by every later command.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from alignmix.checkpoints.base import BaseKind, base_kind, resolve_base_path
from alignmix.checkpoints.gguf import dequantise_gguf
from alignmix.progress import ticking

MODELS_ENV = "ALIGNMIX_MODELS"


def models_cache() -> Path:
    """Where de-quantised GGUF models are kept: $ALIGNMIX_MODELS, else ~/.cache/alignmix/models."""
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "alignmix" / "models")


def model_folder(spec: str, what: str = "MODEL",
                 echo: Callable[[str], None] | None = None) -> tuple[Path, BaseKind]:
    """The folder `spec` stands for and its kind (`hf` or `litgpt`); raises ConversionError naming `what`.
    `echo` hears about a de-quantisation before it starts (it takes about a minute on a CPU)."""
    path = resolve_base_path(spec, what)
    kind = base_kind(path, what)
    if kind != "gguf":
        return path, kind
    folder = models_cache() / path.name.split(".")[0]
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder, "hf"
    if echo is not None:
        echo(f"de-quantising {path.name} into {folder} (once; about a minute on a CPU)")
    with ticking("model", f"de-quantising {path.name}"):
        return dequantise_gguf(path, folder), "hf"
