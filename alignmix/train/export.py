"""Export a litgpt GPT-NeoX checkpoint folder as a transformers checkpoint with its tokenizer.

transformers, vLLM and lm-evaluation-harness load the result. The weights are renamed (and the
attention's q/k/v rows interleaved) by litgpt's own GPT-NeoX mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignmix.train.checkpoint import lit_weights


class ExportError(ValueError):
    """A checkpoint that cannot be exported: the message names the folder and what is missing."""


GELU_NAMES = {"none": "gelu", "tanh": "gelu_pytorch_tanh"}


def _hf_config(config, tokenizer_config: dict):  # noqa: ANN001 (litgpt Config)
    from transformers import GPTNeoXConfig

    if config.mlp_class_name != "GptNeoxMLP" or config.norm_class_name != "LayerNorm" or config.n_query_groups != config.n_head:
        raise ExportError(
            f"model '{config.name}' is not a GPT-NeoX architecture (mlp {config.mlp_class_name},"
            f" norm {config.norm_class_name}); only GPT-NeoX models export to transformers here"
        )
    return GPTNeoXConfig(
        vocab_size=config.padded_vocab_size,
        hidden_size=config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        intermediate_size=config.intermediate_size,
        hidden_act=GELU_NAMES[config.gelu_approximate],
        rotary_pct=config.rotary_percentage,
        rotary_emb_base=config.rope_base,
        max_position_embeddings=config.block_size,
        layer_norm_eps=config.norm_eps,
        use_parallel_residual=config.parallel_residual,
        attention_bias=config.bias,
        tie_word_embeddings=False,
        bos_token_id=tokenizer_config.get("bos_token_id"),
        eos_token_id=tokenizer_config.get("eos_token_id"),
    )


def _tokenizer(checkpoint_dir: Path):  # noqa: ANN202
    from transformers import PreTrainedTokenizerFast

    tokenizer_file = checkpoint_dir / "tokenizer.json"
    if not tokenizer_file.exists():
        raise ExportError(f"{checkpoint_dir}: no tokenizer.json beside the weights")
    config_file = checkpoint_dir / "tokenizer_config.json"
    settings = json.loads(config_file.read_text()) if config_file.exists() else {}
    special = {k: settings[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if isinstance(settings.get(k), str)}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file), model_input_names=["input_ids", "attention_mask"], **special
    )  # GPT-NeoX takes no token_type_ids
    if "chat_template" in settings:
        tokenizer.chat_template = settings["chat_template"]
    return tokenizer


def export_hf(checkpoint_dir: Path, out_dir: Path, dtype: torch.dtype | None = None) -> Path:
    """Write `out_dir` as a transformers GPTNeoXForCausalLM checkpoint (safetensors) plus tokenizer."""
    from litgpt import Config
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_gpt_neox
    from transformers import GPTNeoXForCausalLM

    checkpoint_dir = Path(checkpoint_dir)
    for required in ("lit_model.pth", "model_config.yaml"):
        if not (checkpoint_dir / required).exists():
            raise ExportError(f"{checkpoint_dir}: not a litgpt checkpoint folder (no {required})")
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    tokenizer = _tokenizer(checkpoint_dir)
    hf_config = _hf_config(config, {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id})
    lit_state = lit_weights(checkpoint_dir)
    hf_state: dict[str, torch.Tensor] = {}
    copy_weights_gpt_neox(config, hf_state, lit_state)
    dtype = dtype or next(iter(lit_state.values())).dtype
    model = GPTNeoXForCausalLM._from_config(hf_config, torch_dtype=dtype)
    model.load_state_dict(hf_state, strict=True)
    model.config.torch_dtype = dtype
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
