"""SFT and DPO on Lightning Fabric: one job file per stage, step checkpoints, resume, a litgpt `final/` folder.

`python -m alignmix.train.posttrain JOB.yaml` runs a job (what the stage launches, under `srun` on Slurm).
The data order is fixed by the seed, so a resumed job skips exactly the micro-batches it already trained on.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from alignmix.checkpoints.weights import lit_weights, refuse_non_finite
from alignmix.recipe import DPOSettings, PostTrainSettings
from alignmix.train.litgpt_config import TrainConfigError
from alignmix.train.step_checkpoints import write_sha256


def _default(name: str, settings: type[PostTrainSettings] = PostTrainSettings) -> Any:
    """A job field's default: the recipe's own (one source for each default)."""
    return settings.model_fields[name].default


@dataclass
class PostTrainJob:
    """Everything an SFT or DPO run needs; written as `OUT/job.yaml` by the stage, with the chat tokenizer in
    `OUT/tokenizer/`."""

    kind: Literal["sft", "dpo"]
    stage: str
    checkpoint_dir: str  # the starting weights: a litgpt checkpoint folder
    data_file: str
    data_format: Literal["alpaca", "sharegpt", "preference"]
    out_dir: str
    lr: float
    min_lr: float = _default("min_lr")
    warmup_fraction: float = _default("warmup_fraction")
    weight_decay: float = _default("weight_decay")
    betas: list[float] = field(default_factory=lambda: list(_default("betas")))
    eps: float = _default("eps")
    max_norm: float = _default("max_norm")
    epochs: int = _default("epochs")
    global_batch_size: int = _default("global_batch_size")
    micro_batch_size: int = _default("micro_batch_size")
    max_seq_length: int = _default("max_seq_length")
    precision: str = _default("precision")
    devices: int | str = 1
    num_nodes: int = _default("num_nodes")
    strategy: Literal["auto", "ddp", "fsdp"] = _default("strategy")
    save_interval: int = _default("save_interval")
    seed: int = 0
    beta: float = _default("beta", DPOSettings)  # DPO only
    lora_r: int = 0  # > 0: train a LoRA of this rank (litgpt's) on every linear layer, merged into `final/`
    lora_alpha: int = 16
    lora_dropout: float = 0.0

    def write(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False))
        return path

    @classmethod
    def read(cls, path: Path) -> PostTrainJob:
        return cls(**yaml.safe_load(path.read_text()))


def learning_rate(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from `peak` to `floor` at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    ratio = (step - warmup) / max(1, total - 1 - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * min(1.0, ratio))) * (peak - floor)


def load_weights(model: torch.nn.Module, checkpoint_dir: Path) -> None:
    """Load the folder's `lit_model.pth` into `model`."""
    model.load_state_dict(lit_weights(checkpoint_dir))


def lora_config(config: Any, job: PostTrainJob) -> Any:
    """litgpt's LoRA config for `config`: every linear layer of the blocks adapted at rank `job.lora_r`."""
    from litgpt.lora import Config as LoRAConfig

    return LoRAConfig(**{**asdict(config), "lora_r": job.lora_r, "lora_alpha": job.lora_alpha,
                         "lora_dropout": job.lora_dropout, "lora_query": True, "lora_key": True, "lora_value": True,
                         "lora_projection": True, "lora_mlp": True, "lora_head": False})


def build_model(fabric: Any, config: Any, start_dir: Path, job: PostTrainJob) -> torch.nn.Module:
    """The model to train: litgpt's GPT with the starting weights or, with `job.lora_r`, litgpt's LoRA GPT with
    the base weights frozen."""
    if not job.lora_r:
        from litgpt import GPT

        with fabric.init_module():
            model = GPT(config)
        load_weights(model, start_dir)
        return model
    from litgpt.lora import GPT as LoRAGPT
    from litgpt.lora import mark_only_lora_as_trainable

    with fabric.init_module():
        model = LoRAGPT(lora_config(config, job))
    model.load_state_dict(lit_weights(start_dir), strict=False)  # the LoRA matrices start as litgpt sets them
    mark_only_lora_as_trainable(model)
    return model


def merged_lora_weights(config: Any, job: PostTrainJob, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain GPT's state dict with the LoRA update merged in (on the CPU), as litgpt's merge_lora writes it."""
    from litgpt.lora import GPT as LoRAGPT
    from litgpt.lora import lora_filter, merge_lora_weights

    model = LoRAGPT(lora_config(config, job))
    model.load_state_dict(weights)
    merge_lora_weights(model)
    return {k.replace("linear.", ""): v for k, v in model.state_dict().items() if not lora_filter(k, v)}


def latest_state(out_dir: Path) -> Path | None:
    states = sorted(out_dir.glob("step-*/state.pth"))
    return states[-1] if states else None


def micro_batch_plan(n_examples: int, job: PostTrainJob, rank: int, world: int) -> tuple[list[list[list[int]]], int]:
    """Optimizer steps over all epochs, each this rank's micro-batches (example indices), and the number of
    examples per epoch left out.

    Each epoch shuffles (seeded) and takes only whole global batches, split `[rank::world]`: every rank runs the
    same steps with the same micro-batch counts; the `n_examples % global_batch_size` examples after the last
    whole batch sit the epoch out (different ones each epoch).
    """
    per_rank = job.global_batch_size // world
    if job.global_batch_size % world or per_rank % job.micro_batch_size:
        raise ValueError(
            f"stage '{job.stage}': global_batch_size {job.global_batch_size} must be a multiple of"
            f" micro_batch_size {job.micro_batch_size} x {world} device(s)"
        )
    batches = n_examples // job.global_batch_size
    if batches == 0:
        raise ValueError(
            f"stage '{job.stage}': {n_examples} examples do not fill one global batch of {job.global_batch_size}"
        )
    steps = []
    generator = torch.Generator().manual_seed(job.seed)
    for _ in range(job.epochs):
        order = torch.randperm(n_examples, generator=generator).tolist()
        for start in range(0, batches * job.global_batch_size, job.global_batch_size):
            mine = order[start : start + job.global_batch_size][rank::world]
            steps.append([mine[i : i + job.micro_batch_size] for i in range(0, per_rank, job.micro_batch_size)])
    return steps, n_examples - batches * job.global_batch_size


def fabric_strategy(name: str) -> Any:
    """`auto` and `ddp` by name; `fsdp` as litgpt's full fine-tuning sets it up: each litgpt `Block` sharded
    and recomputed in the backward pass."""
    if name != "fsdp":
        return name
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt.model import Block

    return FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block}, limit_all_gathers=True)


def setup_reference(fabric: Any, reference: torch.nn.Module) -> torch.nn.Module:
    """DPO's frozen reference, in eval mode, with the policy's weight precision, on the device (sharded under
    FSDP); its forward runs under `fabric.autocast()` like the policy's."""
    from lightning.fabric.strategies import FSDPStrategy

    reference.requires_grad_(False).eval()
    if isinstance(fabric.strategy, FSDPStrategy):
        return fabric.setup_module(reference)
    # not `setup_module`: DDP refuses a module without trainable parameters
    return fabric.to_device(fabric.strategy.precision.convert_module(reference))


def full_state_dict(fabric: Any, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU for rank 0 (empty on the others); every rank must call it, since FSDP
    gathers the shards."""
    from lightning.fabric.strategies import FSDPStrategy

    if isinstance(fabric.strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
            state = model.state_dict()
    else:
        state = model.state_dict() if fabric.global_rank == 0 else {}
    return {k: v.detach().cpu() for k, v in state.items()}


class MetricsLog:
    """`logs/metrics.csv`: step, lr and the objective's metrics, kept across resumptions up to the resumed step."""

    COLUMNS = ("train_loss", "reward_margin", "logp_margin", "reward_accuracy")

    def __init__(self, path: Path, start_step: int):
        """Drop the rows after `start_step` (logged after the checkpoint a job resumes from), then append."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = list(csv.reader(path.read_text().splitlines()))[1:] if path.is_file() else []
        self.handle = path.open("w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerows([["step", "lr", *self.COLUMNS], *(row for row in rows if int(row[0]) <= start_step)])
        self.handle.flush()

    def write(self, step: int, lr: float, metrics: dict[str, float]) -> None:
        self.writer.writerow([step, lr, *(metrics.get(k, "") for k in self.COLUMNS)])
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def run_job(job: PostTrainJob) -> dict[str, Any]:
    """Run an SFT or DPO job to `OUT/final/`, resuming from the last `step-*` checkpoint; returns a summary."""
    import lightning as L
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    from alignmix.train.chat import load_chat_tokenizer
    from alignmix.train.dpo import collate_dpo, dpo_examples, dpo_loss
    from alignmix.train.sft import collate_sft, sft_examples, sft_loss

    out_dir, start_dir = Path(job.out_dir), Path(job.checkpoint_dir)
    fabric = L.Fabric(
        devices=job.devices, num_nodes=job.num_nodes, precision=job.precision,  # type: ignore[arg-type]
        strategy=fabric_strategy(job.strategy),
    )
    fabric.launch()
    fabric.seed_everything(job.seed)
    config = Config.from_file(start_dir / "model_config.yaml")
    tokenizer_dir = out_dir / "tokenizer"  # written by the stage (`post_training_job`) before launching
    tokenizer, eos = load_chat_tokenizer(tokenizer_dir)
    if job.max_seq_length > config.block_size:
        raise TrainConfigError(f"post_training.{job.kind}.max_seq_length {job.max_seq_length:,} exceeds the block_size"
                               f" of the model in {start_dir} ({config.block_size:,}); lower max_seq_length")
    max_length = job.max_seq_length
    if job.kind == "sft":
        examples: list[Any] = sft_examples(Path(job.data_file), job.data_format, tokenizer, eos, max_length)  # type: ignore[arg-type]
        collate = collate_sft
    else:
        examples = dpo_examples(Path(job.data_file), tokenizer, eos, max_length)
        collate = collate_dpo

    model = build_model(fabric, config, start_dir, job)
    model.max_seq_length = max_length
    model = fabric.setup_module(model)  # under FSDP: sharded before the optimizer and the reference exist
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(
        trainable, lr=job.lr, weight_decay=job.weight_decay, betas=tuple(job.betas), eps=job.eps
    ))
    reference = None
    if job.kind == "dpo":
        with fabric.init_module():
            reference = GPT(config)
        load_weights(reference, start_dir)
        reference.max_seq_length = max_length
        reference = setup_reference(fabric, reference)

    plan, left_out = micro_batch_plan(len(examples), job, fabric.global_rank, fabric.world_size)
    if left_out:
        fabric.print(f"{job.stage}: {left_out} of {len(examples)} examples sit out each epoch"
                     f" (not a whole global batch of {job.global_batch_size})")
    warmup = math.ceil(job.warmup_fraction * len(plan))
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "step": 0}
    resumed = latest_state(out_dir)
    if resumed is not None:
        fabric.print(f"Resuming {job.stage} from {resumed.parent.name}")
        fabric.load(resumed, state, weights_only=True)
    log = MetricsLog(out_dir / "logs" / "metrics.csv", state["step"]) if fabric.global_rank == 0 else None
    last: dict[str, float] = {}
    for step in range(state["step"], len(plan)):
        lr = learning_rate(step, len(plan), warmup, job.lr, job.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro_batches = plan[step]
        totals: dict[str, float] = {}
        for index, indices in enumerate(micro_batches):
            batch = fabric.to_device(collate([examples[i] for i in indices]))
            with fabric.no_backward_sync(model, enabled=index < len(micro_batches) - 1):
                if reference is None:
                    loss, metrics = sft_loss(model, batch)
                else:
                    with fabric.autocast():  # the reference runs in the policy's precision
                        loss, metrics = dpo_loss(model, reference, batch, job.beta)
                fabric.backward(loss / len(micro_batches))
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value / len(micro_batches)
        fabric.clip_gradients(model, optimizer, max_norm=job.max_norm)
        optimizer.step()
        optimizer.zero_grad()
        state["step"] = step + 1
        last = totals
        if log is not None:
            log.write(step + 1, lr, totals)
        fabric.print(f"{job.stage} step {step + 1}/{len(plan)} | " + " | ".join(f"{k} {v:.4f}" for k, v in totals.items()))
        if (step + 1) % job.save_interval == 0 and step + 1 < len(plan):
            saved = out_dir / f"step-{step + 1:06d}" / "state.pth"
            fabric.save(saved, state)
            if fabric.global_rank == 0 and saved.is_file():  # a sharded state is a folder, and not hashed
                write_sha256(saved)
    final = out_dir / "final"
    weights = full_state_dict(fabric, model)
    if job.lora_r and weights:  # rank 0 holds the whole model
        weights = merged_lora_weights(config, job, weights)
    if log is not None:
        log.close()
        refuse_non_finite(weights, final / "lit_model.pth")
        partial = out_dir / "final.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(tokenizer_dir, partial)
        torch.save(weights, partial / "lit_model.pth")
        save_config(config, partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    fabric.barrier()
    return {"steps": len(plan), "examples": len(examples), "left_out_per_epoch": left_out,
            "resumed_from": resumed.parent.name if resumed else None, "final_metrics": last}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m alignmix.train.posttrain JOB.yaml")
    run_job(PostTrainJob.read(Path(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
