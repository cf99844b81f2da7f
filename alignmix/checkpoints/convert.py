"""A released transformers folder (config.json + safetensors) converted into a litgpt checkpoint folder.

The conversion is litgpt's own `convert_hf_checkpoint`; the litgpt config name is given, or inferred from the
folder's name, the config's `_name_or_path`, or else the one litgpt config whose shape equals config.json's. The
transformers config.json, the tokenizer files and the chat template (folded into tokenizer_config.json, where
litgpt and the scorer read it) are kept beside the weights, so the model exports back to the same architecture.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

from alignmix.checkpoints.litgpt_configs import config_dict, config_names
from alignmix.errors import AlignmixError


class ConversionError(AlignmixError):
    """A model folder that cannot be converted: the message names the folder and what was expected."""


KEPT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model")
_SHAPE_KEYS = {  # litgpt Config field -> transformers config.json keys holding it
    "n_layer": ("num_hidden_layers", "n_layer"), "n_embd": ("hidden_size", "n_embd"),
    "n_head": ("num_attention_heads", "n_head"), "intermediate_size": ("intermediate_size",),
}


def _shape(hf_config: dict) -> dict[str, int | None]:
    return {field: next((hf_config[k] for k in keys if k in hf_config), None) for field, keys in _SHAPE_KEYS.items()}


def infer_litgpt_name(hf_dir: Path, hf_config: dict) -> str:
    """The litgpt config name for a transformers folder (see the module docstring); raises ConversionError."""
    name_to_config = config_names()

    for candidate in (hf_dir.name, str(hf_config.get("_name_or_path", "")).rstrip("/").split("/")[-1]):
        if candidate in name_to_config:
            return candidate
    wanted = _shape(hf_config)
    vocab = hf_config.get("vocab_size")
    matches = []
    for name in name_to_config:
        config = config_dict(name)
        same = all(config[field] == value for field, value in wanted.items())
        if same and vocab is not None and config["vocab_size"] <= vocab <= config["padded_vocab_size"]:
            matches.append(name)
    if not matches:
        raise ConversionError(
            f"{hf_dir}: no litgpt config has this model's shape ({', '.join(f'{k} {v}' for k, v in wanted.items())},"
            f" vocab {vocab}); give base_model.name (a litgpt config name)"
        )
    return matches[0]


def _with_chat_template(hf_dir: Path, out_dir: Path) -> None:
    """Fold a separate chat_template.jinja (what newer transformers write) into tokenizer_config.json."""
    jinja_file = hf_dir / "chat_template.jinja"
    config_file = out_dir / "tokenizer_config.json"
    if jinja_file.is_file() and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.setdefault("chat_template", jinja_file.read_text(encoding="utf-8"))
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def convert_hf_to_litgpt(hf_dir: Path, out_dir: Path, model_name: str | None = None) -> str:
    """Convert `hf_dir` into the litgpt checkpoint folder `out_dir` (lit_model.pth, model_config.yaml, the kept
    files); returns the litgpt config name used. The weights are linked, not copied, while litgpt reads them."""
    from litgpt.config import name_to_config
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    hf_dir = Path(hf_dir)
    config_file = hf_dir / "config.json"
    weights = sorted(hf_dir.glob("*.safetensors")) + sorted(hf_dir.glob("*.bin")) + sorted(hf_dir.glob("*.index.json"))
    if not config_file.is_file() or not weights:
        raise ConversionError(f"{hf_dir}: expected a transformers folder (config.json and *.safetensors weights)")
    hf_config = json.loads(config_file.read_text(encoding="utf-8"))
    if model_name is not None and model_name not in name_to_config:
        raise ConversionError(f"base_model.name: '{model_name}' is not a litgpt config name")
    name = model_name or infer_litgpt_name(hf_dir, hf_config)
    out_dir.mkdir(parents=True, exist_ok=True)
    for kept in KEPT_FILES:
        if (hf_dir / kept).is_file():
            shutil.copyfile(hf_dir / kept, out_dir / kept)
    _with_chat_template(hf_dir, out_dir)
    links = [out_dir / w.name for w in weights]
    for link, weight in zip(links, weights):
        link.unlink(missing_ok=True)
        link.symlink_to(weight.resolve())
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # litgpt prints its arguments
            convert_hf_checkpoint(out_dir, model_name=name)
    except Exception as exc:  # litgpt raises KeyError / RuntimeError on weights that do not fit the config
        raise ConversionError(f"{hf_dir}: litgpt could not convert it as '{name}' ({type(exc).__name__}: {exc})") from exc
    finally:
        for link in links:
            link.unlink(missing_ok=True)
    return name
