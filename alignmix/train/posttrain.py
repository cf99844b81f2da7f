"""SFT and DPO on Lightning Fabric: one job file per stage, step checkpoints, resume, a litgpt `final/` folder.

`python -m alignmix.train.posttrain JOB.yaml` runs a job (what the stage launches, under `srun` on Slurm).
The data order is fixed by the seed, so a resumed job skips exactly the micro-batches it already trained on.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch

from alignmix.checkpoints.weights import lit_weights, refuse_non_finite
from alignmix.outputs import ModelOutput
from alignmix.train.litgpt_config import TrainConfigError
from alignmix.train.post_job import PostTrainJob, read_job
from alignmix.train.step_checkpoints import write_sha256


class Objective(Protocol):
    """What SFT and DPO differ by in the loop: their examples, batches, extra models and loss."""

    def examples(self, data_file: Path, tokenizer: Any, eos: str, max_length: int) -> list[Any]: ...

    def collate(self, examples: list[Any]) -> dict[str, torch.Tensor]: ...

    def prepare(self, fabric: Any, config: Any, start_dir: Path, max_length: int) -> None:
        """Set up what the loss needs besides the policy (DPO: the frozen reference)."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]: ...


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
    """litgpt's LoRA config for `config`: every linear layer of the blocks adapted at the job's LoRA rank."""
    from litgpt.lora import Config as LoRAConfig

    lora = job.lora
    assert lora is not None, "a LoRA job"
    return LoRAConfig(**{**asdict(config), "lora_r": lora.lora_r, "lora_alpha": lora.lora_alpha,
                         "lora_dropout": lora.lora_dropout, "lora_query": True, "lora_key": True, "lora_value": True,
                         "lora_projection": True, "lora_mlp": True, "lora_head": False})


def build_model(fabric: Any, config: Any, start_dir: Path, job: PostTrainJob) -> torch.nn.Module:
    """The model to train: litgpt's GPT with the starting weights or, for a LoRA job, litgpt's LoRA GPT with the
    base weights frozen."""
    if job.lora is None:
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
    states = [step / "state.pth" for step in ModelOutput(out_dir).steps() if (step / "state.pth").exists()]
    return states[-1] if states else None


def micro_batch_plan(n_examples: int, job: PostTrainJob, rank: int, world: int) -> tuple[list[list[list[int]]], int]:
    """Optimizer steps over all epochs, each this rank's micro-batches (example indices), and the number of
    examples per epoch left out.

    Each epoch shuffles (seeded) and takes only whole global batches, split `[rank::world]`: every rank runs the
    same steps with the same micro-batch counts; the `n_examples % global_batch_size` examples after the last
    whole batch sit the epoch out (different ones each epoch).
    """
    settings = job.settings
    per_rank = settings.global_batch_size // world
    if settings.global_batch_size % world or per_rank % settings.micro_batch_size:
        raise ValueError(
            f"stage '{job.stage}': global_batch_size {settings.global_batch_size} must be a multiple of"
            f" micro_batch_size {settings.micro_batch_size} x {world} device(s)"
        )
    batches = n_examples // settings.global_batch_size
    if batches == 0:
        raise ValueError(
            f"stage '{job.stage}': {n_examples} examples do not fill one global batch of {settings.global_batch_size}"
        )
    steps = []
    generator = torch.Generator().manual_seed(job.seed)
    for _ in range(settings.epochs):
        order = torch.randperm(n_examples, generator=generator).tolist()
        for start in range(0, batches * settings.global_batch_size, settings.global_batch_size):
            mine = order[start : start + settings.global_batch_size][rank::world]
            steps.append([mine[i : i + settings.micro_batch_size] for i in range(0, per_rank, settings.micro_batch_size)])
    return steps, n_examples - batches * settings.global_batch_size


def fabric_strategy(name: str) -> Any:
    """`auto` and `ddp` by name; `fsdp` as litgpt's full fine-tuning sets it up: each litgpt `Block` sharded
    and recomputed in the backward pass."""
    if name != "fsdp":
        return name
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt.model import Block

    return FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block}, limit_all_gathers=True)


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
    from litgpt import Config
    from litgpt.utils import save_config

    from alignmix.train.chat import load_chat_tokenizer

    out_dir, start_dir, settings, objective = job.out_dir, job.checkpoint_dir, job.settings, job.objective()
    fabric = L.Fabric(
        devices=job.devices, num_nodes=job.num_nodes, precision=settings.precision,  # type: ignore[arg-type]
        strategy=fabric_strategy(settings.strategy),
    )
    fabric.launch()
    fabric.seed_everything(job.seed)
    config = Config.from_file(start_dir / "model_config.yaml")
    tokenizer_dir = out_dir / "tokenizer"  # written by the stage (`post_training_job`) before launching
    tokenizer, eos = load_chat_tokenizer(tokenizer_dir)
    if settings.max_seq_length > config.block_size:
        raise TrainConfigError(f"post_training.{job.kind}.max_seq_length {settings.max_seq_length:,} exceeds the"
                               f" block_size of the model in {start_dir} ({config.block_size:,}); lower max_seq_length")
    max_length = settings.max_seq_length
    examples = objective.examples(job.data_file, tokenizer, eos, max_length)

    model = build_model(fabric, config, start_dir, job)
    model.max_seq_length = max_length
    model = fabric.setup_module(model)  # under FSDP: sharded before the optimizer and the reference exist
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(
        trainable, lr=settings.lr, weight_decay=settings.weight_decay, betas=settings.betas, eps=settings.eps
    ))
    objective.prepare(fabric, config, start_dir, max_length)

    plan, left_out = micro_batch_plan(len(examples), job, fabric.global_rank, fabric.world_size)
    if left_out:
        fabric.print(f"{job.stage}: {left_out} of {len(examples)} examples sit out each epoch"
                     f" (not a whole global batch of {settings.global_batch_size})")
    warmup = math.ceil(settings.warmup_fraction * len(plan))
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "step": 0}
    resumed = latest_state(out_dir)
    if resumed is not None:
        fabric.print(f"Resuming {job.stage} from {resumed.parent.name}")
        fabric.load(resumed, state, weights_only=True)
    log = MetricsLog(ModelOutput(out_dir).metrics_path, state["step"]) if fabric.global_rank == 0 else None
    last: dict[str, float] = {}
    for step in range(state["step"], len(plan)):
        lr = learning_rate(step, len(plan), warmup, settings.lr, settings.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro_batches = plan[step]
        totals: dict[str, float] = {}
        for index, indices in enumerate(micro_batches):
            batch = fabric.to_device(objective.collate([examples[i] for i in indices]))
            with fabric.no_backward_sync(model, enabled=index < len(micro_batches) - 1):
                loss, metrics = objective.loss(model, batch)
                fabric.backward(loss / len(micro_batches))
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value / len(micro_batches)
        fabric.clip_gradients(model, optimizer, max_norm=settings.max_norm)
        optimizer.step()
        optimizer.zero_grad()
        state["step"] = step + 1
        last = totals
        if log is not None:
            log.write(step + 1, lr, totals)
        fabric.print(f"{job.stage} step {step + 1}/{len(plan)} | " + " | ".join(f"{k} {v:.4f}" for k, v in totals.items()))
        if (step + 1) % settings.save_interval == 0 and step + 1 < len(plan):
            saved = out_dir / f"step-{step + 1:06d}" / "state.pth"
            fabric.save(saved, state)
            if fabric.global_rank == 0 and saved.is_file():  # a sharded state is a folder, and not hashed
                write_sha256(saved)
    final = ModelOutput(out_dir).final
    weights = full_state_dict(fabric, model)
    if job.lora is not None and weights:  # rank 0 holds the whole model
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
    run_job(read_job(Path(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
