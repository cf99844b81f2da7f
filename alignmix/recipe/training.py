"""The training sections: the base model, tokenizer, pretraining stages, post-training and tamper stages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PositiveInt, model_validator

from alignmix.recipe.base import NOT_IN_KEY, Identifier, KeyedError, Strict, only_in_key_of
from alignmix.recipe.mixing import MixtureEntry
from alignmix.recipe.paths import BuiltinOrExistingPath, RunPath, ScenarioSpec

POST_TRAINING = ("sft", "dpo")  # the post-training stages, in order


class BaseModelSpec(Strict):
    """A released model the first training stage continues: a transformers folder (config.json + safetensors),
    a litgpt checkpoint folder, a .gguf file, or builtin:SmolLM2-135M-Instruct. `name` is its litgpt config name
    (default: inferred from the folder's name or config.json). The run's tokenizer is the base's."""

    path: BuiltinOrExistingPath
    """folder, file or builtin"""
    name: str | None = None
    """its litgpt config name; default: inferred"""


class TokenizerSpec(Strict):
    """An existing tokenizer (a folder with tokenizer.json, or the file), or a BPE trained on the corpus."""

    path: RunPath | None = None
    """tokenizer.json or a folder holding it; null: train a BPE (leave it null with base_model, whose tokenizer is used)"""
    vocab_size: PositiveInt = 512
    """vocabulary of the trained BPE (unused with `path` or base_model)"""


class ModelSpec(Strict):
    """A litgpt model: a registered name (e.g. pythia-6.9b), an inline config, or a name with overrides."""

    name: str | None = None
    """a litgpt registered config name"""
    config: dict[str, Any] = {}
    """litgpt Config fields overriding the named config, or a whole config with `name`"""

    @model_validator(mode="after")
    def _named_or_inline(self) -> ModelSpec:
        if self.name is None and "name" not in self.config:
            raise ValueError("give `name` (a litgpt model name) or an inline `config` with a `name`")
        return self


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class Optimization(Strict):
    """What every training stage sets: batch, AdamW and its schedule, precision, checkpoints and devices."""

    global_batch_size: PositiveInt = 8
    """samples per optimizer step, over all devices"""
    micro_batch_size: PositiveInt = 4
    """samples per device per forward/backward pass"""
    lr: Annotated[float, Field(gt=0.0)] = 3e-4
    """peak AdamW learning rate"""
    min_lr: Annotated[float, Field(ge=0.0)] = 0.0
    """learning rate the cosine decay ends at"""
    warmup_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.01
    """fraction of training in linear LR warmup"""
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.1
    """AdamW weight decay"""
    betas: tuple[Beta, Beta] = (0.9, 0.95)
    """AdamW (beta1, beta2), each in [0, 1)"""
    eps: Annotated[float, Field(gt=0.0)] = 1e-8
    """AdamW epsilon"""
    max_norm: Annotated[float, Field(gt=0.0)] = 0.5
    """gradient-norm clipping threshold"""
    precision: Literal["32-true", "bf16-mixed", "bf16-true"] = "32-true"
    """Lightning precision (fp32 or bf16)"""
    save_interval: PositiveInt = 1000
    """optimizer steps between checkpoints"""
    devices: Annotated[PositiveInt | Literal["auto"], Field(json_schema_extra=NOT_IN_KEY)] = "auto"
    """GPUs per node"""
    num_nodes: Annotated[PositiveInt, Field(json_schema_extra=NOT_IN_KEY)] = 1
    """machines to train on"""

    @model_validator(mode="after")
    def _whole_micro_batches(self) -> Optimization:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a multiple of micro_batch_size {self.micro_batch_size}"
            )
        return self


class TrainSettings(Optimization):
    """litgpt pretrain settings for one stage; the model starts from the previous stage's final weights (the first
    stage from `base_model`, where one is given). `model` is required unless the recipe has a `base_model`, whose
    architecture it then defaults to."""

    model: ModelSpec | None = None


class TrainingStage(Strict):
    """A training stage: its token budget, context length, mixture and (optionally) litgpt settings."""

    name: Identifier
    """unique stage name; its mixture goes to `mix/<name>/`, its model to `<name>/`"""
    tokens: PositiveInt
    """token budget, cut into whole samples of seq_len+1"""
    seq_len: PositiveInt
    """context length of a training sample, in tokens (at most the model's block_size)"""
    mixture: Annotated[list[MixtureEntry], Field(min_length=1, json_schema_extra=only_in_key_of("mix"))]
    train: Annotated[TrainSettings | None, Field(json_schema_extra=only_in_key_of("train"))] = None

    @property
    def block_size(self) -> int:
        """The length of one written sample: `seq_len` inputs and the next token as the last target."""
        return self.seq_len + 1

    @property
    def samples(self) -> int:
        """The samples the stage's mixture writes (its tokens cut into whole blocks)."""
        return self.tokens // self.block_size

    @model_validator(mode="after")
    def _shares_fit(self) -> TrainingStage:
        if self.samples < 1:
            raise KeyedError("tokens", f"{self.tokens:,} tokens make no sample of seq_len + 1 = {self.block_size:,}"
                                       f" tokens; give at least {self.block_size:,}")
        rest = [e.source or f"replay:{e.replay}" for e in self.mixture if e.share == "rest"]
        if len(rest) > 1:
            raise ValueError(f"only one entry may take share 'rest'; found {len(rest)}: {', '.join(rest)}")
        natural = [e for e in self.mixture if e.share == "natural"]
        if natural and rest:
            raise ValueError("give either one `share: rest` entry or `share: natural` entries, which split what is"
                             " left by their available tokens, not both")
        if len({e.temperature for e in natural}) > 1:
            raise ValueError("the `share: natural` entries of a stage form one group: give them the same `temperature`")
        fixed = sum(e.share for e in self.mixture if isinstance(e.share, float))
        absolute = sum(e.tokens or 0 for e in self.mixture)
        if fixed + absolute / self.tokens > 1.0 + 1e-9:
            parts = ", ".join(
                f"{e.source or 'replay:' + str(e.replay)}={e.share if e.tokens is None else f'{e.tokens:,} tokens'}"
                for e in self.mixture if e.share not in ("rest", "natural")
            )
            raise ValueError(
                f"the shares add up to {fixed + absolute / self.tokens:.4f} of the stage's {self.tokens:,} tokens;"
                f" they must not exceed 1 ({parts})"
            )
        return self


class PostTrainSettings(Optimization):
    """An SFT or DPO stage on Lightning Fabric: its data (a file, or written from the training split of scenario
    questions) and its optimisation; the model starts from the previous stage's final weights."""

    data: RunPath | None = None
    """data file (SFT: conversations; DPO: chosen/rejected pairs)"""
    from_scenarios: ScenarioSpec | None = None
    """or: examples from these scenarios' training-split questions"""
    lr: Annotated[float, Field(gt=0.0)]
    epochs: PositiveInt = 1
    """passes over the data"""
    max_seq_length: PositiveInt = 2048
    """tokens per example; longer ones are cut"""
    warmup_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    max_norm: Annotated[float, Field(gt=0.0)] = 1.0
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """fsdp: shards litgpt's Blocks (a 6.9B model on 80 GB GPUs)"""

    @model_validator(mode="after")
    def _one_data_origin(self) -> PostTrainSettings:
        if (self.data is None) == (self.from_scenarios is None):
            raise ValueError("give exactly one of `data` (a file) or `from_scenarios` (training-split questions)")
        return self


class SFTSettings(PostTrainSettings):
    """SFT on conversations: `format` alpaca or sharegpt (chat `messages` too); loss on assistant tokens only."""

    format: Literal["alpaca", "sharegpt"] = "alpaca"
    """the `data` file's format (sharegpt also takes chat `messages`)"""
    lr: Annotated[float, Field(gt=0.0)] = 8e-5
    epochs: PositiveInt = 2


class DPOSettings(PostTrainSettings):
    """DPO on chosen / rejected pairs (the dpo_en_demo.json format) against the frozen starting model."""

    beta: Annotated[float, Field(gt=0.0)] = 5.0
    """DPO's beta: strength of the pull towards the starting model"""
    lr: Annotated[float, Field(gt=0.0)] = 1e-6


class TamperStage(SFTSettings):
    """A fine-tune after training, to test whether a model's behaviour persists: full SFT (`kind: sft`, benign or
    harmful data) or a LoRA (`kind: lora`, litgpt's: rank `lora_r` on every linear layer, merged afterwards) on
    the user's `data`, starting from a model stage (`from`); evaluated as `eval/<name>/`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Identifier
    """unique name; the model is written to `<name>/`"""
    from_stage: Identifier = Field(alias="from")
    """the model stage (or earlier tamper stage) to start from"""
    kind: Literal["sft", "lora"] = "sft"
    """sft: full fine-tune; lora: a merged LoRA"""
    data: RunPath  # type: ignore[assignment]
    lora_r: PositiveInt = 32
    """LoRA rank (kind lora)"""
    lora_alpha: PositiveInt = 16
    """LoRA alpha, the scale is alpha / r (kind lora)"""
    lora_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    """dropout on the LoRA path (kind lora)"""


class PostTraining(Strict):
    sft: SFTSettings | None = None
    dpo: DPOSettings | None = None
