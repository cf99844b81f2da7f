"""litgpt pretrain configs generated from a recipe's training stage: one YAML file litgpt reads as it is."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignmix.checkpoints.litgpt_configs import config_dict, config_fields, config_names
from alignmix.errors import AlignmixError
from alignmix.recipe import Delivery, ModelSpec, TrainingStage
from alignmix.train.launch import LOCAL, Launch


class TrainConfigError(AlignmixError):
    """A stage that cannot be trained as configured: the message names the stage and the numbers."""


def validate_model_spec(spec: ModelSpec, key: str) -> None:
    """Refuse an unknown litgpt model name or config field before any work, naming the recipe key."""
    names = config_names()
    if spec.name is not None and spec.name not in names:
        close = difflib.get_close_matches(spec.name, list(names), n=3)
        raise TrainConfigError(f"key '{key}.name': unknown litgpt model '{spec.name}'; close names: {close}")
    allowed = config_fields()
    for field_name in spec.config:
        if field_name not in allowed:
            close = difflib.get_close_matches(field_name, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TrainConfigError(f"unknown key '{key}.config.{field_name}'{hint}: not a litgpt Config field")


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """The full litgpt model config: a registered name with overrides, or an inline config."""
    return config_dict(spec.name, **spec.config)


def check_context(stage: TrainingStage, config: dict[str, Any]) -> None:
    """Refuse a stage whose `seq_len` is longer than the model's context (`block_size`)."""
    if stage.seq_len > config["block_size"]:
        raise TrainConfigError(
            f"stage '{stage.name}': seq_len {stage.seq_len:,} exceeds the block_size of model '{config['name']}'"
            f" ({config['block_size']:,}); lower seq_len or raise model.config.block_size"
        )


def check_vocabulary(stage_name: str, config: dict[str, Any], vocab_size: int) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding table."""
    if vocab_size > config["padded_vocab_size"]:
        raise TrainConfigError(
            f"stage '{stage_name}': the tokenizer has {vocab_size:,} tokens but the model '{config['name']}'"
            f" embeds only {config['padded_vocab_size']:,}; set model.config.vocab_size / padded_vocab_size"
        )


@dataclass(frozen=True)
class StageFiles:
    """Where a training stage reads its data, tokenizer and starting weights, and where it writes."""

    data_dir: Path
    tokenizer_dir: Path
    out_dir: Path
    vocab_size: int
    initial_checkpoint_dir: Path | None
    tied_embeddings: bool = False  # the starting model ties its input and output embeddings (e.g. SmolLM2)
    delivery: Delivery = "chunks"  # how the mixture reaches litgpt: its LitData chunks, or streamed (MixtureData)


def data_config(files: StageFiles, seed: int) -> dict[str, Any]:
    """litgpt's `data` for the stage: LitData on the mixture's chunks, or MixtureData streaming its index."""
    if files.delivery == "stream":
        return {"class_path": "alignmix.train.data.MixtureData",
                "init_args": {"mixture": str(files.data_dir), "num_workers": 0}}
    return {"class_path": "litgpt.data.LitData",
            "init_args": {"data_path": str(files.data_dir), "seed": seed, "num_workers": 0}}


def pretrain_config(
    stage: TrainingStage, files: StageFiles, seed: int, resume: Path | None, launch: Launch = LOCAL
) -> dict[str, Any]:
    """The `litgpt pretrain --config` mapping for one stage; `resume` is the step checkpoint it continues from,
    and `launch` may override the recipe's devices and nodes (e.g. a Slurm allocation)."""
    settings = stage.train
    if settings is None or settings.model is None:
        raise TrainConfigError(f"stage '{stage.name}' has no `train` settings with a model")
    config = model_config(settings.model)
    check_vocabulary(stage.name, config, files.vocab_size)
    check_context(stage, config)
    return {
        "model_name": config["name"],
        "model_config": config,
        "out_dir": str(files.out_dir),
        "precision": settings.precision,
        "initial_checkpoint_dir": None if resume or files.initial_checkpoint_dir is None
        else str(files.initial_checkpoint_dir),
        "resume": str(resume / "lit_model.pth") if resume else False,
        "data": data_config(files, seed),
        "train": {
            "save_interval": settings.save_interval,
            "log_interval": 1,
            "global_batch_size": settings.global_batch_size,
            "micro_batch_size": settings.micro_batch_size,
            "max_tokens": stage.samples * stage.seq_len,  # litgpt's iterations then read no sample twice
            "max_seq_length": stage.seq_len,
            "lr_warmup_steps": None,
            "lr_warmup_fraction": settings.warmup_fraction,
            "max_norm": settings.max_norm,
            "min_lr": settings.min_lr,
            "tie_embeddings": files.tied_embeddings,
        },
        "eval": {"interval": 10**9, "max_iters": 2, "initial_validation": False, "final_validation": True},
        "optimizer": {
            "class_path": "torch.optim.AdamW",
            "init_args": {
                "lr": settings.lr, "weight_decay": settings.weight_decay, "betas": list(settings.betas),
                "eps": settings.eps,
            },
        },
        "devices": launch.devices(settings.devices),
        "num_nodes": launch.num_nodes(settings.num_nodes),
        "tokenizer_dir": str(files.tokenizer_dir),
        "logger_name": "csv",
        "seed": seed,
    }
