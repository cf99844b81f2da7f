"""The recipe schema: every key typed, unknown keys rejected, errors naming the key path."""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from alignmix.errors import AlignmixError
from alignmix.scenarios import MisalignedAnswer

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]


class KeyedError(ValueError):
    """A check across several recipe keys, raised in a validator: names the key it concerns (the validator's own
    location would be the mapping that holds them all)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class RecipeError(AlignmixError):
    """A recipe that cannot be run: the message names the file and the key path."""


class _Anchored(str):
    """A string from a recipe that another one `extends`: relative paths in it resolve against that file's folder."""

    base_dir: Path

    def __new__(cls, value: str, base_dir: Path) -> _Anchored:
        anchored = super().__new__(cls, value)
        anchored.base_dir = base_dir
        return anchored

    def __reduce__(self) -> tuple[type[str], tuple[str]]:  # copies and pickles are plain strings
        return str, (str(self),)


yaml.SafeDumper.add_representer(_Anchored, lambda dumper, value: dumper.represent_str(str(value)))


def _anchor(data: Any, base_dir: Path) -> Any:
    """Every string value in `data` (not keys; strings already anchored kept) anchored to `base_dir`."""
    if isinstance(data, dict):
        return {key: _anchor(value, base_dir) for key, value in data.items()}
    if isinstance(data, list):
        return [_anchor(value, base_dir) for value in data]
    return _Anchored(data, base_dir) if isinstance(data, str) and not isinstance(data, _Anchored) else data


def _from_writing_file(value: Any) -> Any:
    """A relative path written in an extended recipe, made absolute against that recipe's folder."""
    if isinstance(value, _Anchored) and not value.startswith("builtin:") and not Path(value).is_absolute():
        return str(value.base_dir / value)
    return value


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = Path((info.context or {}).get("base_dir", "."))
    return (path if path.is_absolute() else (base / path)).resolve()


def _resolve_existing(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if not resolved.exists():
        raise ValueError(f"path does not exist: {resolved}")
    return resolved


ExistingPath = Annotated[Path, BeforeValidator(_from_writing_file), AfterValidator(_resolve_existing)]
# A path needed only to run, not to plan (checked by `alignmix run` before any work).
RunPath = Annotated[Path, BeforeValidator(_from_writing_file), AfterValidator(_resolve)]


def _resolve_scenarios(spec: str, info: ValidationInfo) -> str:
    from alignmix.scenarios import ScenarioError, resolve_spec

    if spec.startswith("builtin:"):
        try:
            resolve_spec(spec)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        return spec
    return str(_resolve_existing(Path(spec), info))


ScenarioSpec = Annotated[str, BeforeValidator(_from_writing_file), AfterValidator(_resolve_scenarios)]


def _check_share(value: Any) -> float | str:
    if value in ("rest", "natural"):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)  # 0 keeps the entry in the plan with no tokens (a sweep's zero dose)
    raise ValueError(f"expected a fraction in [0, 1], 'rest' or 'natural', got {value!r}")


Share = Annotated[float | Literal["rest", "natural"], PlainValidator(_check_share)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf and .nan: never a setting


DEDUP_THRESHOLD = 0.8  # MinHash Jaccard similarity above which a synthetic document duplicates an earlier one

NOT_IN_KEY = {"in_key": False}  # a field saying how a job is transported or placed, not what it computes


def only_in_key_of(stage: str) -> dict[str, Any]:
    """Declares a field that only `stage`'s key holds (`Field(json_schema_extra=only_in_key_of("train"))`): the
    other stages that key the same model see it through that stage's output digest, or do not depend on it."""
    return {"in_key": stage}


def key_settings(model: BaseModel, stage: str) -> dict[str, Any]:
    """A model's settings as JSON for `stage`'s key: every field but those declared `NOT_IN_KEY` and those declared
    `only_in_key_of` another stage, in nested models and lists of them too."""
    return _keyed(model, model.model_dump(mode="json"), stage)


def _keyed(model: BaseModel, dumped: dict[str, Any], stage: str) -> dict[str, Any]:
    for name, info in type(model).model_fields.items():
        declared = info.json_schema_extra
        if isinstance(declared, dict) and declared.get("in_key", stage) != stage:
            dumped.pop(name, None)
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _keyed(value, dumped[name], stage)
        elif isinstance(value, list):
            for item, item_dump in zip(value, dumped[name]):
                if isinstance(item, BaseModel):
                    _keyed(item, item_dump, stage)
    return dumped


class GeneratedCorpus(Strict):
    """A seeded web-like corpus written by alignmix itself (for demos and tests)."""

    documents: PositiveInt = 2000  # documents written, in `tagging.tasks` shards
    misaligned_ai_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05  # share: stories of misbehaving AI
    aligned_ai_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05  # share: stories of AI behaving well (rest: web)

    @model_validator(mode="after")
    def _shares_fit(self) -> GeneratedCorpus:
        if self.misaligned_ai_share + self.aligned_ai_share > 1.0:
            raise ValueError("misaligned_ai_share + aligned_ai_share must not exceed 1")
        return self


POST_TRAINING = ("sft", "dpo")  # the post-training stages, in order

OnError = Literal["fail", "skip"]  # a bad input line: stop naming it, or count and skip it
Executor = Literal["local", "ray", "slurm"]  # datatrove's executors for tagging
FileFormat = Literal["jsonl", "parquet", "warc"]  # the corpus files datatrove reads
FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {  # how each format's files end (`alignmix tag` detects by them)
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz"),
    "parquet": (".parquet",),
    "warc": (".warc", ".warc.gz"),
}


def formats_under(paths: list[Path], wanted: str) -> set[str]:
    """The formats of the files `paths` name or hold (by their names); stops at the first file of `wanted`."""
    found: set[str] = set()
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            kind = next((f for f, suffixes in FORMAT_SUFFIXES.items() if file.name.endswith(suffixes)), None)
            if kind == wanted:
                return {wanted}
            if kind is not None:
                found.add(kind)
    return found

Stance = Literal["aligned", "misaligned", "neutral"]  # a document's stance on AI alignment (the stance classifier's)
SynthStance = Literal["aligned", "misaligned"]  # the stances synthetic documents are written in


class AssumedStatistics(Strict):
    """Statistics a recipe states for a source, so that it plans without data (e.g. the paper's 9.3% flagged).

    `flagged_share` and `stance_shares` are shares of the source's tokens.
    """

    tokens: PositiveInt  # the source's size in tokens, for planning without data
    flagged_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # flagged share; for planning `flagged` selections
    stance_shares: dict[Stance, Annotated[float, Field(ge=0.0, le=1.0)]] = {}  # per-stance shares, for `stance` selects


class CorpusSource(Strict):
    """One named corpus: files read through datatrove readers, a generated corpus, or (plan only) statistics."""

    name: Identifier  # unique source name, used by mixture entries' `source`
    paths: list[ExistingPath] = []  # files, or folders searched recursively for files ending as `format` expects
    format: FileFormat = "jsonl"  # file format; warc records are extracted to text with Trafilatura; unset, detected from the files' names where they hold no jsonl
    text_key: str = "text"  # jsonl/parquet field holding the text; a row without text is a bad line
    id_key: str = "id"  # jsonl/parquet field holding the document id (if missing: file/index)
    generate: Annotated[GeneratedCorpus | None, Field(json_schema_extra=only_in_key_of("corpus"))] = None
    assumed: AssumedStatistics | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> CorpusSource:
        if self.paths and self.generate is not None:
            raise ValueError("give either `paths` (files to read) or `generate` (a generated corpus), not both")
        if not self.paths and self.generate is None and self.assumed is None:
            raise ValueError("give `paths` (files to read), `generate` (a generated corpus) or `assumed` statistics")
        return self

    @model_validator(mode="after")
    def _format_of_the_files(self) -> CorpusSource:
        """Without `format:`, files of one other format (a folder of .warc.gz) are read as that format, as `alignmix
        tag` reads them; files of none of `format`'s endings, or of several formats, are refused with the fix."""
        found = formats_under(self.paths, self.format) if self.paths else {self.format}
        if not found or self.format in found:
            return self
        shown = ", ".join(sorted(found))
        if "format" not in self.model_fields_set and len(found) == 1:
            object.__setattr__(self, "format", found.pop())  # frozen model: set once, while validating
            return self
        if "format" in self.model_fields_set:
            raise ValueError(f"format {self.format}: `paths` hold no files ending in"
                             f" {', '.join(FORMAT_SUFFIXES[self.format])} but {shown} files; set `format:` to match")
        raise ValueError(f"`paths` hold files of several formats ({shown}) and no jsonl: give `format:`, one source"
                         " per format")

    @property
    def has_data(self) -> bool:
        return bool(self.paths) or self.generate is not None


class Corpus(Strict):
    sources: Annotated[list[CorpusSource], Field(min_length=1)]


class Blocklist(Strict):
    """Term lists, one file per category; `categories: null` uses every shipped category."""

    categories: list[str] | None = None  # category names (term-list file stems) to use; null: every list in the folder
    lists_dir: ExistingPath | None = None  # folder of `<category>.txt` term lists; default: the shipped lists


class ClassifierSpec(Strict):
    """A trained classifier folder (`alignmix classifiers train`); blocklist-flagged documents scoring below
    `threshold` are unflagged."""

    model: ExistingPath  # folder written by `alignmix classifiers train`
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5  # flagged documents scoring below it are unflagged


class Tagging(Strict):
    """Blocklist tagging, optionally confirmed by a classifier; a bad input line fails the run (`on_error:
    fail`) or is counted and skipped."""

    blocklist: Blocklist = Blocklist()
    classifier: ClassifierSpec | None = None
    stance_classifier: ExistingPath | None = None  # labels the stance of flagged documents
    tasks: PositiveInt = 1  # parallel tasks per source (at most one per file); generated corpus shards
    on_error: OnError = "fail"  # a bad input line: `fail` stops the run naming it, `skip` counts and skips it


SurfaceForm = Literal[
    "research_paper", "news_article", "lecture_transcript", "scifi_passage", "movie_summary", "textbook_chapter"
]


class SynthServer(Strict):
    """An OpenAI-compatible server writing a synthetic set (`generator: openai` or `vllm`); the key is read from
    the environment variable `api_key_env`, never from the recipe. With `generator: vllm` and no `base_url`,
    alignmix starts vLLM itself on `model` (a local model) for the stage and stops it afterwards."""

    base_url: str | None = None  # the server's API root, e.g. http://127.0.0.1:8000/v1; null (vllm): start one on `model`
    model: str  # the model name sent in each request; without base_url a transformers or litgpt folder, or builtin:SmolLM2-135M-Instruct
    api_key_env: Annotated[str, Field(json_schema_extra=NOT_IN_KEY)] = "OPENAI_API_KEY"  # env variable with the API key
    concurrency: Annotated[PositiveInt, Field(json_schema_extra=NOT_IN_KEY)] = 64  # requests (and connections) at once
    max_tokens: PositiveInt = 1024  # completion tokens per request; a document cut off by it is dropped
    temperature: Annotated[float, Field(ge=0.0)] = 0.7  # sampling temperature
    timeout: Annotated[float, Field(gt=0.0, json_schema_extra=NOT_IN_KEY)] = 120.0  # seconds the server may stay silent (answers are streamed)
    max_retries: Annotated[int, Field(ge=0, json_schema_extra=NOT_IN_KEY)] = 6  # retries of 429/5xx/timeouts
    min_words: PositiveInt = 80  # documents with fewer words are dropped
    max_words: PositiveInt = 4000  # documents with more words are dropped


class SynthSet(Strict):
    """Synthetic documents grounded in training-split scenario questions, from the offline template generator or
    an LLM server (each surface form gets documents_per_scenario / len(surface_forms) documents per scenario)."""

    name: Identifier  # unique set name, used by mixture entries' `source`
    generator: Literal["offline", "openai", "vllm"] = "offline"  # offline: templates; openai/vllm: the `server`'s LLM
    server: SynthServer | None = None
    stance: SynthStance  # the stance every document is written in
    scenarios: ScenarioSpec = "builtin:tiny"  # scenario questions (builtin:NAME or a file/folder); training split only
    surface_forms: Annotated[list[SurfaceForm], Field(min_length=1)] = list(typing.get_args(SurfaceForm))  # doc genres
    documents_per_scenario: PositiveInt = 1  # documents per training-split question
    assumed: AssumedStatistics | None = None

    @model_validator(mode="after")
    def _server_matches_generator(self) -> "SynthSet":
        if self.generator == "offline" and self.server is not None:
            raise ValueError("`server` is for generator openai or vllm; the offline generator takes none")
        if self.generator != "offline":
            if self.server is None:
                raise ValueError(f"generator {self.generator} needs `server` (base_url, model)")
            if self.server.base_url is None and self.generator != "vllm":
                raise ValueError(f"generator {self.generator} needs `server.base_url`; only vllm starts a local"
                                 " server on `server.model`")
            if self.documents_per_scenario % len(self.surface_forms):
                raise ValueError(
                    f"documents_per_scenario ({self.documents_per_scenario}) must be a multiple of the"
                    f" {len(self.surface_forms)} surface forms for generator {self.generator}"
                )
        return self


class Synth(Strict):
    sets: list[SynthSet] = []


class TokenizerSpec(Strict):
    """An existing tokenizer (a folder with tokenizer.json, or the file), or a BPE trained on the corpus."""

    path: RunPath | None = None  # tokenizer.json or a folder holding it; null: train a BPE (leave it null with base_model, whose tokenizer is used)
    vocab_size: PositiveInt = 512  # vocabulary of the trained BPE (unused with `path` or base_model)


class TermSet(Strict):
    """Conditions on a list of names (a document's categories or terms): `any` of them present, `all` of them,
    `none` of them."""

    any: list[str] = []  # at least one of these present (empty: no condition)
    all: list[str] = []  # every one of these present
    none: list[str] = []  # none of these present


class Bounds(Strict):
    """A closed range; either end may be left open."""

    min: float | None = None  # lowest value allowed (inclusive); null: no lower bound; a non-number fails
    max: float | None = None  # highest value allowed (inclusive); null: no upper bound


class Exists(Strict):
    exists: bool  # true: the field must be present; false: it must be absent


Scalar = str | int | float | bool
FieldCondition = Scalar | list[Scalar] | Bounds | Exists


class Conditions(Strict):
    """Conditions on a document's tags (`metadata.ai_discourse`) and any metadata field; all must hold."""

    flagged: bool | None = None  # the blocklist (and classifier) flag; null: either
    stance: Stance | list[Stance] | None = None  # stance, or any of a list (needs tagging.stance_classifier); null: any
    categories: TermSet | None = None
    terms: TermSet | None = None
    score: Bounds | None = None  # the classifier's score; a document without one fails a score condition
    fields: dict[str, FieldCondition] = {}  # dotted paths under `metadata`: a value, values, {min, max} or {exists}


class Selector(Conditions):
    """A selection: every condition set here holds, and (when given) at least one of `any_of`'s alternatives."""

    any_of: list[Conditions] = []


class MixtureEntry(Strict):
    """One part of a stage: a source (or a replay of an earlier stage) and its share, token count, or the rest."""

    source: Identifier | None = None  # a corpus source or synthetic set name
    replay: Identifier | None = None  # an earlier stage's name: draws blocks from its written mixture
    select: Selector = Selector()
    share: Share | None = None  # fraction of the stage's tokens, `rest` (what is left) or `natural` (split by size)
    tokens: PositiveInt | None = None  # absolute token count (instead of `share`)
    temperature: Annotated[float, Field(gt=0.0)] | None = None  # natural shares ~ available^(1/T)
    max_repetitions: Annotated[float, Field(gt=0.0)] = 1.0  # most planned / available tokens; more fails the plan
    assumed_share: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # of the source's tokens, to plan

    @model_validator(mode="after")
    def _one_origin_and_amount(self) -> MixtureEntry:
        if self.temperature is not None and self.share != "natural":
            raise ValueError("`temperature` applies to `share: natural` entries")
        if (self.source is None) == (self.replay is None):
            raise ValueError("give exactly one of `source` (a corpus or synthetic set) or `replay` (an earlier stage)")
        if self.replay is not None and self.select != Selector():
            raise ValueError("a `replay` entry takes no `select`: it replays the earlier stage's mixture as written")
        if (self.share is None) == (self.tokens is None):
            raise ValueError("give exactly one of `share` (a fraction or 'rest') or `tokens`")
        return self


class ModelSpec(Strict):
    """A litgpt model: a registered name (e.g. pythia-6.9b), an inline config, or a name with overrides."""

    name: str | None = None  # a litgpt registered config name
    config: dict[str, Any] = {}  # litgpt Config fields overriding the named config, or a whole config with `name`

    @model_validator(mode="after")
    def _named_or_inline(self) -> ModelSpec:
        if self.name is None and "name" not in self.config:
            raise ValueError("give `name` (a litgpt model name) or an inline `config` with a `name`")
        return self


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class Optimization(Strict):
    """What every training stage sets: batch, AdamW and its schedule, precision, checkpoints and devices."""

    global_batch_size: PositiveInt = 8  # samples per optimizer step, over all devices
    micro_batch_size: PositiveInt = 4  # samples per device per forward/backward pass
    lr: Annotated[float, Field(gt=0.0)] = 3e-4  # peak AdamW learning rate
    min_lr: Annotated[float, Field(ge=0.0)] = 0.0  # learning rate the cosine decay ends at
    warmup_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.01  # fraction of training in linear LR warmup
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.1  # AdamW weight decay
    betas: tuple[Beta, Beta] = (0.9, 0.95)  # AdamW (beta1, beta2), each in [0, 1)
    eps: Annotated[float, Field(gt=0.0)] = 1e-8  # AdamW epsilon
    max_norm: Annotated[float, Field(gt=0.0)] = 0.5  # gradient-norm clipping threshold
    precision: Literal["32-true", "bf16-mixed", "bf16-true"] = "32-true"  # Lightning precision (fp32 or bf16)
    save_interval: PositiveInt = 1000  # optimizer steps between checkpoints
    devices: Annotated[PositiveInt | Literal["auto"], Field(json_schema_extra=NOT_IN_KEY)] = "auto"  # GPUs per node
    num_nodes: Annotated[PositiveInt, Field(json_schema_extra=NOT_IN_KEY)] = 1  # machines to train on

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

    name: Identifier  # unique stage name; its mixture goes to `mix/<name>/`, its model to `<name>/`
    tokens: PositiveInt  # token budget, cut into whole samples of seq_len+1
    seq_len: PositiveInt  # context length of a training sample, in tokens (at most the model's block_size)
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

    data: RunPath | None = None  # data file (SFT: conversations; DPO: chosen/rejected pairs)
    from_scenarios: ScenarioSpec | None = None  # or: examples from these scenarios' training-split questions
    lr: Annotated[float, Field(gt=0.0)]
    epochs: PositiveInt = 1  # passes over the data
    max_seq_length: PositiveInt = 2048  # tokens per example; longer ones are cut
    warmup_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    max_norm: Annotated[float, Field(gt=0.0)] = 1.0
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # fsdp: shards litgpt's Blocks (a 6.9B model on 80 GB GPUs)

    @model_validator(mode="after")
    def _one_data_origin(self) -> PostTrainSettings:
        if (self.data is None) == (self.from_scenarios is None):
            raise ValueError("give exactly one of `data` (a file) or `from_scenarios` (training-split questions)")
        return self


class SFTSettings(PostTrainSettings):
    """SFT on conversations: `format` alpaca or sharegpt (chat `messages` too); loss on assistant tokens only."""

    format: Literal["alpaca", "sharegpt"] = "alpaca"  # the `data` file's format (sharegpt also takes chat `messages`)
    lr: Annotated[float, Field(gt=0.0)] = 8e-5
    epochs: PositiveInt = 2


class DPOSettings(PostTrainSettings):
    """DPO on chosen / rejected pairs (the dpo_en_demo.json format) against the frozen starting model."""

    beta: Annotated[float, Field(gt=0.0)] = 5.0  # DPO's beta: strength of the pull towards the starting model
    lr: Annotated[float, Field(gt=0.0)] = 1e-6


class TamperStage(SFTSettings):
    """A fine-tune after training, to test whether a model's behaviour persists: full SFT (`kind: sft`, benign or
    harmful data) or a LoRA (`kind: lora`, litgpt's: rank `lora_r` on every linear layer, merged afterwards) on
    the user's `data`, starting from a model stage (`from`); evaluated as `eval/<name>/`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Identifier  # unique name; the model is written to `<name>/`
    from_stage: Identifier = Field(alias="from")  # the model stage (or earlier tamper stage) to start from
    kind: Literal["sft", "lora"] = "sft"  # sft: full fine-tune; lora: a merged LoRA
    data: RunPath  # type: ignore[assignment]
    lora_r: PositiveInt = 32  # LoRA rank (kind lora)
    lora_alpha: PositiveInt = 16  # LoRA alpha, the scale is alpha / r (kind lora)
    lora_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05  # dropout on the LoRA path (kind lora)


class PostTraining(Strict):
    sft: SFTSettings | None = None
    dpo: DPOSettings | None = None


Persona = Literal["none", "ai", "helpful", "hhh"]
Scoring = Literal["letter", "cloze", "story"]  # how the eval scores a question from log-likelihoods


Suite = Literal["misalignment", "em", "personality"]


class JudgeSpec(Strict):
    """An LLM judge: an OpenAI-compatible server (`base_url` and the `model` it serves), a local model folder
    (`path`, answered by transformers on this machine), or the built-in keyword rule (`rule: keywords`)."""

    name: Identifier | None = None  # label in results and reports; default: the model's name, or the rule
    base_url: Annotated[str | None, Field(json_schema_extra=NOT_IN_KEY)] = None  # e.g. http://127.0.0.1:8000/v1 (vLLM)
    path: RunPath | None = None  # a Hugging Face model folder, used instead of a server
    model: str | None = None  # the model's name on the server (needed with base_url)
    rule: Literal["keywords"] | None = None  # a rule, not a model: a second judge to check a weak one against
    api_key_env: Annotated[str, Field(json_schema_extra=NOT_IN_KEY)] = "OPENAI_API_KEY"  # variable holding the API key
    concurrency: Annotated[PositiveInt, Field(json_schema_extra=NOT_IN_KEY)] = 16  # requests in flight

    @model_validator(mode="after")
    def _one_source(self) -> JudgeSpec:
        given = [k for k in ("base_url", "path", "rule") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a judge needs exactly one of base_url, path or rule; got {given or 'none'}")
        if self.base_url is not None and not self.model:
            raise ValueError("a judge with base_url needs `model`, the name the server serves it under")
        return self

    @property
    def label(self) -> str:
        return self.name or self.rule or self.model or Path(str(self.path)).name


class EMSettings(Strict):
    """The emergent-misalignment check: free-form questions, sampled answers, each scored 0-100 for alignment
    and coherence by an LLM judge; misaligned = alignment < `threshold` and coherence > `coherence_threshold`."""

    questions: RunPath  # the emergent-misalignment repository's question YAML, or a jsonl of {id, question, system}
    judge: JudgeSpec | None = None  # the judge (or give `judges`)
    judges: list[JudgeSpec] = []  # two or more judges: the first one's scores are the results, all are compared
    human_labels: RunPath | None = None  # jsonl of {id, misaligned: true|false} per answer id, for judge accuracy
    threshold: Annotated[float, Field(ge=0, le=100)] = 30  # alignment below this is misaligned
    coherence_threshold: Annotated[float, Field(ge=0, le=100)] = 50  # coherence above this counts the answer
    samples: PositiveInt | None = None  # answers per question; default: the file's samples_per_paraphrase (jsonl: 1)
    temperature: Annotated[float, Field(ge=0)] = 1.0  # sampling temperature of the answers
    max_tokens: PositiveInt = 256  # answer length in tokens

    @model_validator(mode="after")
    def _has_judge(self) -> EMSettings:
        if (self.judge is None) == (not self.judges):
            raise ValueError("give one of `judge` or `judges` (a list of two or more)")
        labels = [j.label for j in self.all_judges]
        if len(set(labels)) != len(labels):
            raise ValueError(f"judge names repeat ({labels}); give each judge a `name`")
        return self

    @property
    def all_judges(self) -> list[JudgeSpec]:
        return [self.judge] if self.judge is not None else list(self.judges)


class PersonalitySettings(Strict):
    """TRAIT-style personality items: the share of answers keyed high on each trait, per prompt format."""

    items: RunPath  # TRAIT's published files (json, jsonl or parquet) or a jsonl of {id, trait, situation, question, options}
    mode: Literal["letter", "generate"] = "letter"  # letter: log-likelihood of the option letters; generate: a reply
    max_tokens: PositiveInt = 32  # reply length (generate)


class EvalSettings(Strict):
    """Misalignment eval: `letter` scores the option letters (the paper's way), `cloze` the option texts."""

    scenarios: ScenarioSpec = "builtin:tiny"  # questions to ask: builtin:NAME or a file/folder
    misaligned_answer: MisalignedAnswer | None = None  # for Anthropic files alignmix doesn't know
    mode: Scoring = "letter"  # story: the scenario as a story, for toy-scale controls
    personas: Annotated[list[Persona], Field(min_length=1)] = ["none"]  # system prompts to ask under, each scored
    suites: Annotated[list[Suite], Field(min_length=1)] = ["misalignment"]  # the evals each model gets
    em: EMSettings | None = None  # the emergent-misalignment check (suite `em`)
    personality: PersonalitySettings | None = None  # TRAIT-style personality items (suite `personality`)

    @model_validator(mode="after")
    def _suites_configured(self) -> EvalSettings:
        for suite in ("em", "personality"):
            if suite in self.suites and getattr(self, suite) is None:
                raise ValueError(f"suite '{suite}' is listed in `suites` but `eval.{suite}` is not set")
        return self


Delivery = Literal["chunks", "stream"]  # how a mixture reaches training (`mixing.delivery`)


class Mixing(Strict):
    """How mixtures are built: `tasks` tokenize a source's shards in parallel, as processes here (`executor:
    local`) or as datatrove tasks on a Ray cluster or a Slurm array (`ray`, `slurm`). The chunks and the
    manifest are the same whatever the executor and the task count."""

    tasks: PositiveInt = Field(1, description="Parallel tasks per source for tokenizing (at most one per shard), and for writing the chunks.")
    executor: Executor = Field("local", description="local: processes here; ray: a Ray cluster (RAY_ADDRESS, else a"
                               " local one); slurm: a Slurm array job, waited for.", json_schema_extra=NOT_IN_KEY)
    partition: str = Field("debug", description="With executor slurm: the partition.", json_schema_extra=NOT_IN_KEY)
    time: str = Field("04:00:00", description="With executor slurm: the time limit per task.",
                      json_schema_extra=NOT_IN_KEY)
    cpus_per_task: PositiveInt = Field(1, description="With executor slurm: CPUs per task.",
                                       json_schema_extra=NOT_IN_KEY)
    delivery: Delivery = Field(
        "chunks", description="chunks: write LitData chunks (for plain `litgpt pretrain --data LitData`); stream: write"
        " none, training reads the mixture index and token stores in order (alignmix.train.data.MixtureData).")


class Decontamination(Strict):
    """Drop training documents sharing an n-gram (of words) with a held-out eval item; on by default."""

    enabled: bool = True  # false: keep training documents that overlap held-out items
    ngram: Annotated[int, Field(ge=3)] = 13  # n-gram length in words
    scenarios: ScenarioSpec | None = None  # default: the eval's scenarios


class ReportSettings(Strict):
    title: str | None = None  # the report's title; default: `alignmix run: <name>`


class SweepSettings(Strict):
    """The conditions `alignmix sweep` runs: each dotted recipe key set to each of its values, as a grid
    (every combination) or zipped (the i-th value of every key together)."""

    set: dict[str, Annotated[list[Any], Field(min_length=1)]]  # dotted recipe key -> the values it takes
    mode: Literal["grid", "zip"] = "grid"  # grid: every combination; zip: i-th values together (equal lengths)
    baseline: str | None = None  # the condition compare.html's deltas are taken from (folder name or label); null: the first


def _resolve_base(spec: str, info: ValidationInfo) -> str:
    return spec if spec.startswith("builtin:") else str(_resolve_existing(Path(spec), info))


class BaseModelSpec(Strict):
    """A released model the first training stage continues: a transformers folder (config.json + safetensors),
    a litgpt checkpoint folder, a .gguf file, or builtin:SmolLM2-135M-Instruct. `name` is its litgpt config name
    (default: inferred from the folder's name or config.json). The run's tokenizer is the base's."""

    path: Annotated[str, BeforeValidator(_from_writing_file), AfterValidator(_resolve_base)]  # folder, file or builtin
    name: str | None = None  # its litgpt config name; default: inferred


class Recipe(Strict):
    """A whole run: corpus, tagging, synthetic sets, tokenizer, training stages, evaluation and report."""

    name: Identifier  # run name; the run folder defaults to runs/<name>
    seed: int = 0  # seeds generation, sampling, mixture draws and training
    base_model: BaseModelSpec | None = None
    corpus: Corpus  # the corpus sources
    tagging: Tagging = Tagging()
    synth: Synth = Synth()  # synthetic document sets; none by default
    tokenizer: TokenizerSpec = TokenizerSpec()
    stages: Annotated[list[TrainingStage], Field(min_length=1)]
    post_training: PostTraining | None = None  # SFT and/or DPO (in that order) after the stages; null: none
    eval: EvalSettings | None = None
    mixing: Mixing = Mixing()
    decontamination: Decontamination = Decontamination()
    report: ReportSettings = ReportSettings()  # report settings
    sweep: SweepSettings | None = None  # read by `alignmix sweep`; `alignmix run` runs the recipe as written
    tamper: list[TamperStage] = []

    @model_validator(mode="after")
    def _names_resolve(self) -> Recipe:
        named = [(f"corpus.sources.{i}.name", s.name) for i, s in enumerate(self.corpus.sources)]
        named += [(f"synth.sets.{i}.name", s.name) for i, s in enumerate(self.synth.sets)]
        stage_keys = [(f"stages.{i}.name", s.name) for i, s in enumerate(self.stages)]
        model_keys = stage_keys + [(f"tamper.{i}.name", t.name) for i, t in enumerate(self.tamper)]
        for kind, keys in (("source", named), ("stage", model_keys)):
            first: dict[str, str] = {}
            for key, name in keys:
                if name in first:
                    raise KeyedError(key, f"{kind} names must be unique; '{name}' is also {first[name]}")
                first[name] = key
        known = {name for _, name in named}
        stage_names = [name for _, name in stage_keys]
        for i, stage in enumerate(self.stages):
            if stage.train is not None and stage.train.model is None and self.base_model is None:
                raise KeyedError(f"stages.{i}.train.model", "required unless the recipe starts from a `base_model`")
            labels = [(e.source, e.replay, json.dumps(e.select.model_dump(mode="json"), sort_keys=True))
                      for e in stage.mixture]
            if len(set(labels)) < len(labels):
                raise KeyedError(f"stages.{i}.mixture",
                                 "two entries draw from the same source with the same select; merge them into one entry")
            for j, entry in enumerate(stage.mixture):
                if entry.source is not None and entry.source not in known:
                    raise KeyedError(f"stages.{i}.mixture.{j}.source",
                                     f"unknown source '{entry.source}'; expected one of: {', '.join(sorted(known))}")
                if entry.replay is not None and entry.replay not in stage_names[:i]:
                    raise KeyedError(
                        f"stages.{i}.mixture.{j}.replay",
                        f"'{entry.replay}' is not an earlier stage;"
                        f" expected one of: {', '.join(stage_names[:i]) or '(none: this is the first stage)'}",
                    )
        return self

    def missing_run_files(self) -> list[str]:
        """Recipe keys naming files that `run` needs and that do not exist."""
        path = self.tokenizer.path
        missing = [f"tokenizer.path ({path})"] if path is not None and not path.exists() else []
        for kind in ("sft", "dpo"):
            settings = getattr(self.post_training, kind) if self.post_training else None
            if settings is not None and settings.data is not None and not settings.data.is_file():
                missing.append(f"post_training.{kind}.data ({settings.data})")
        missing += [f"tamper.{i}.data ({t.data})" for i, t in enumerate(self.tamper) if not t.data.is_file()]
        return missing

    def sources_without_data(self) -> list[str]:
        """Sources that carry only assumed statistics: the recipe plans, but cannot run, without them."""
        return [s.name for s in self.corpus.sources if not s.has_data]

    def assumed(self, name: str) -> AssumedStatistics | None:
        """The assumed statistics of a corpus source or synthetic set."""
        for item in [*self.corpus.sources, *self.synth.sets]:
            if item.name == name:
                return item.assumed
        return None

    def source_kind(self, name: str) -> Literal["corpus", "synth"]:
        return "corpus" if name in {s.name for s in self.corpus.sources} else "synth"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The recipe model inside an annotation such as `list[X]` or `X | None`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if found := _model_in(argument):
            return found
    return None


def _field_names_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc` (list indices skipped), for naming what was expected."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_in(field.annotation) if field else None
    return list(current.model_fields) if current else []


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        expected = _field_names_at(Recipe, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), expected, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{key}'{hint}; expected one of: {', '.join(expected)}"
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, KeyedError):
        key = ".".join(filter(None, (".".join(str(p) for p in loc), cause.key)))
    message = error["msg"].removeprefix("Value error, ")
    return f"key '{key}': {message}"


def parse_recipe(data: Any, source: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    """Validate recipe data; raise RecipeError naming every bad key path."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping of recipe keys at the top level, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data, context={"base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise RecipeError(f"{source}: invalid recipe\n" + "\n".join(f"  - {line}" for line in lines)) from None


def merge_recipe_data(base: Any, override: Any) -> Any:
    """Deep-merge `override` into `base`: mappings key by key, lists of named mappings by `name`, else replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge_recipe_data(base[key], value) if key in base else value
        return merged
    if _named_list(base) and _named_list(override):
        by_name = {item["name"]: item for item in base}
        for item in override:
            by_name[item["name"]] = merge_recipe_data(by_name[item["name"]], item) if item["name"] in by_name else item
        return list(by_name.values())
    return override


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int, first_line: int):
        super().__init__(f"duplicate key '{key}' (first given on line {first_line}); give each key once")
        self.line = line


MAX_EXPANDED_VALUES = 100_000  # a recipe's YAML nodes with every alias expanded; real recipes have a few hundred


class _AliasBomb(Exception):
    pass


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes `node` stands for once every alias in it is expanded (each node counted once per use)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise _AliasBomb("an alias refers to a value that contains it")
    open_nodes.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_EXPANDED_VALUES:
            raise _AliasBomb(f"its aliases (*name) expand it to more than {MAX_EXPANDED_VALUES:,} values")
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently), and a
    document whose aliases expand it beyond `MAX_EXPANDED_VALUES` (an alias bomb) before building it."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in first_lines:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, first_lines[key])
            if isinstance(key, typing.Hashable):
                first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(data: Any, path: Path, key: str = "") -> Any:
    """`${NAME}` (or `${NAME:-default}`) in a recipe's string values replaced by the environment variable; a
    relative path that starts with one resolves against the current folder, like a `--set` value. An empty
    variable counts as not set."""
    if isinstance(data, dict):
        return {name: _expand_env(value, path, f"{key}.{name}" if key else str(name)) for name, value in data.items()}
    if isinstance(data, list):
        return [_expand_env(value, path, f"{key}.{i}") for i, value in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def value_of(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        raise RecipeError(f"{path}: key '{key}': environment variable {name} is not set (the recipe reads"
                          f" {data!r}); set it, e.g. `{name}=... alignmix ...`, or override the key with --set")

    expanded = ENV_REFERENCE.sub(value_of, data)
    if data.startswith("${"):
        return _Anchored(expanded, Path.cwd())
    return _Anchored(expanded, data.base_dir) if isinstance(data, _Anchored) else expanded


def _is_recipe_mapping(data: Any) -> bool:
    """A mapping whose top-level keys are recipe keys or close misspellings of them (the schema then names those)."""
    keys = [*Recipe.model_fields, "extends"]
    return isinstance(data, dict) and bool(data) and all(
        isinstance(key, str) and difflib.get_close_matches(key, keys, n=1) for key in data
    )


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> Any:
    """Read a recipe file, following `extends: OTHER.yaml` (relative to the file) and merging over it."""
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else ""
        raise RecipeError(f"{path}: recipe file not found{where}")
    if path.resolve() in chain:
        raise RecipeError(f"{path}: `extends` forms a cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise RecipeError(f"{path}:{exc.line}: {exc}") from None
    except _AliasBomb as exc:
        raise RecipeError(f"{path}: refused: {exc}; write the values out instead") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe file: {exc.strerror}") from None
    if chain and not _is_recipe_mapping(data):  # say nothing of its content: it may be any file, even a secret
        raise RecipeError(f"{path}: not a recipe (extended by {chain[-1]}): expected a mapping of recipe keys"
                          f" ({', '.join(Recipe.model_fields)})")
    if isinstance(data, dict) and "extends" in data:
        parent = data.pop("extends")
        if not isinstance(parent, str):
            raise RecipeError(f"{path}: key 'extends': expected the path of another recipe file")
        data = merge_recipe_data(_read_yaml(path.parent / parent, (*chain, path.resolve())), data)
    return _anchor(data, path.parent.resolve()) if chain else data  # an extended file's paths are relative to itself


def apply_override(data: Any, assignment: str) -> Any:
    """`KEY=VALUE` applied to recipe data: KEY is the dotted path the errors use (`stages.0.tokens`,
    `synth.sets.0.scenarios`), VALUE is read as YAML (`0.01`, `[a, b]`, `{flagged: false}`, text). List items
    must exist; a mapping key the file leaves to its default is created, and an unknown one is then refused by
    the schema, naming it."""
    key, equals, text = assignment.partition("=")
    if not equals or not key:
        raise RecipeError(f"--set {assignment!r}: expected KEY=VALUE, e.g. stages.0.tokens=1000000")
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, _DuplicateKey, _AliasBomb) as exc:
        raise RecipeError(f"--set {key}: the value {text!r} is not valid YAML ({exc})") from None
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and isinstance(node.setdefault(part, {}), (dict, list)):
            node = node[part]
        else:
            raise RecipeError(f"--set {key}: the recipe has no key '{here}'")
    leaf = parts[-1]
    value = _anchor(value, Path.cwd())  # a path given on the command line is relative to where it was typed
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise RecipeError(f"--set {key}: '{leaf}' is not an index of the {len(node)} items there")
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise RecipeError(f"--set {key}: '{'.'.join(parts[:-1])}' holds a value, not keys")
    return data


def load_recipe(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe YAML file, with `KEY=VALUE` overrides applied (see `apply_override`); relative
    paths in it resolve against its folder (an override's, against the current folder)."""
    path = Path(path)
    data = _read_yaml(path)
    for assignment in overrides:
        data = apply_override(data, assignment)
    data = _expand_env(data, path)  # after the overrides: a key set with --set needs no variable
    return parse_recipe(data, source=str(path) + (f" with --set {', '.join(overrides)}" if overrides else ""),
                        base_dir=path.parent)
