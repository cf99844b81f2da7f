"""Export a litgpt checkpoint folder as a transformers checkpoint with its tokenizer and chat template.

The weights are renamed by litgpt's own `convert_lit_checkpoint` (every architecture litgpt converts back). The
transformers config is the `config.json` the model came with (a base model converted by `convert_hf_to_litgpt`
keeps it beside the weights, and training stages carry it on), else one built from the litgpt config for the
GPT-NeoX and Llama families. transformers, vLLM and lm-evaluation-harness load the result.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import torch

from alignmix.checkpoints.weights import check_model_folder, lit_weights
from alignmix.errors import AlignmixError


class ExportError(AlignmixError):
    """A checkpoint that cannot be exported: the message names the folder and what is missing."""


GELU_NAMES = {"none": "gelu", "tanh": "gelu_pytorch_tanh"}
LLAMA_MLPS = ("LLaMAMLP",)


def _neox_config(config, special: dict):  # noqa: ANN001 (litgpt Config)
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=config.padded_vocab_size, hidden_size=config.n_embd, num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head, intermediate_size=config.intermediate_size,
        hidden_act=GELU_NAMES[config.gelu_approximate], rotary_pct=config.rotary_percentage,
        rotary_emb_base=config.rope_base, max_position_embeddings=config.block_size, layer_norm_eps=config.norm_eps,
        use_parallel_residual=config.parallel_residual, attention_bias=config.bias, tie_word_embeddings=False,
        **special,
    )


def _llama_config(config, special: dict, tied: bool):  # noqa: ANN001 (litgpt Config)
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=config.padded_vocab_size, hidden_size=config.n_embd, num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head, num_key_value_heads=config.n_query_groups, head_dim=config.head_size,
        intermediate_size=config.intermediate_size, rms_norm_eps=config.norm_eps, rope_theta=config.rope_base,
        max_position_embeddings=config.block_size, attention_bias=config.bias, mlp_bias=config.bias,
        tie_word_embeddings=tied, **special,
    )


def _hf_config(checkpoint_dir: Path, config, special: dict, tied: bool):  # noqa: ANN001, ANN202
    """The transformers config: the model's own config.json where it has one, else built for its family."""
    from transformers import AutoConfig

    if (checkpoint_dir / "config.json").is_file():
        hf_config = AutoConfig.from_pretrained(checkpoint_dir)
        hf_config.tie_word_embeddings = bool(getattr(hf_config, "tie_word_embeddings", False)) and tied
        return hf_config
    is_neox = config.mlp_class_name == "GptNeoxMLP" and config.norm_class_name == "LayerNorm"
    if is_neox and config.n_query_groups == config.n_head:
        return _neox_config(config, special)
    if config.mlp_class_name in LLAMA_MLPS and config.norm_class_name == "RMSNorm":
        return _llama_config(config, special, tied)
    raise ExportError(
        f"{checkpoint_dir}: model '{config.name}' (mlp {config.mlp_class_name}, norm {config.norm_class_name}) has no"
        " config.json beside its weights, and only GPT-NeoX and Llama configs are built without one; put the"
        " transformers config.json of the model it came from in the folder"
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
    )  # GPT-NeoX and Llama take no token_type_ids
    if "chat_template" in settings:
        tokenizer.chat_template = settings["chat_template"]
    return tokenizer


def hf_state_dict(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under transformers names, renamed by litgpt's `convert_lit_checkpoint`."""
    from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint

    with tempfile.TemporaryDirectory(prefix="alignmix-export-") as scratch:
        with contextlib.redirect_stdout(io.StringIO()):  # litgpt prints its arguments
            convert_lit_checkpoint(checkpoint_dir, Path(scratch))
        return torch.load(Path(scratch) / "model.pth", map_location="cpu", weights_only=True)


def export_hf(checkpoint_dir: Path, out_dir: Path, dtype: torch.dtype | None = None) -> Path:
    """Write `out_dir` as a transformers causal-LM checkpoint (safetensors) plus tokenizer and chat template."""
    from litgpt import Config
    from transformers import AutoModelForCausalLM

    checkpoint_dir = Path(checkpoint_dir)
    for required in ("lit_model.pth", "model_config.yaml"):
        if not (checkpoint_dir / required).exists():
            raise ExportError(f"{checkpoint_dir}: not a litgpt checkpoint folder (no {required})")
    check_model_folder(checkpoint_dir)
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    tokenizer = _tokenizer(checkpoint_dir)
    lit_state = lit_weights(checkpoint_dir)
    tied = torch.equal(lit_state["transformer.wte.weight"], lit_state["lm_head.weight"])
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    hf_config = _hf_config(checkpoint_dir, config, special, tied)
    dtype = dtype or next(iter(lit_state.values())).dtype
    hf_state = hf_state_dict(checkpoint_dir)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    if tied:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ExportError(f"{checkpoint_dir}: litgpt's weights do not fit {type(model).__name__}"
                          f" (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.config.torch_dtype = dtype
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
