"""The whole recipe: its sections, the checks across them, and validation errors naming the key path."""

from __future__ import annotations

import difflib
import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from alignmix.recipe.base import Identifier, KeyedError, RecipeError, Strict
from alignmix.recipe.corpus import AssumedStatistics, Corpus, Synth, Tagging
from alignmix.recipe.evaluation import EvalSettings
from alignmix.recipe.mixing import Decontamination, Mixing, ShareSchedule
from alignmix.recipe.training import BaseModelSpec, PostTraining, TamperStage, TokenizerSpec, TrainingStage

class ReportSettings(Strict):
    title: str | None = None
    """the report's title; default: `alignmix run: <name>`"""


class SweepSettings(Strict):
    """The conditions `alignmix sweep` runs: each dotted recipe key set to each of its values, as a grid
    (every combination) or zipped (the i-th value of every key together)."""

    set: dict[str, Annotated[list[Any], Field(min_length=1)]]
    """dotted recipe key -> the values it takes"""
    mode: Literal["grid", "zip"] = "grid"
    """grid: every combination; zip: i-th values together (equal lengths)"""
    baseline: str | None = None
    """the condition compare.html's deltas are taken from (folder name or label); null: the first"""


class Recipe(Strict):
    """A whole run: corpus, tagging, synthetic sets, tokenizer, training stages, evaluation and report."""

    name: Identifier
    """run name; the run folder defaults to runs/<name>"""
    seed: int = 0
    """seeds generation, sampling, mixture draws and training"""
    base_model: BaseModelSpec | None = None
    corpus: Corpus
    """the corpus sources"""
    tagging: Tagging = Tagging()
    synth: Synth = Synth()
    """synthetic document sets; none by default"""
    tokenizer: TokenizerSpec = TokenizerSpec()
    stages: Annotated[list[TrainingStage], Field(min_length=1)]
    post_training: PostTraining | None = None
    """SFT and/or DPO (in that order) after the stages; null: none"""
    eval: EvalSettings | None = None
    mixing: Mixing = Mixing()
    decontamination: Decontamination = Decontamination()
    report: ReportSettings = ReportSettings()
    """report settings"""
    sweep: SweepSettings | None = None
    """read by `alignmix sweep`; `alignmix run` runs the recipe as written"""
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
                if isinstance(entry.share, ShareSchedule) and self.mixing.delivery == "chunks":
                    raise KeyedError(f"stages.{i}.mixture.{j}.share",
                                     "schedules need mixing.delivery: stream (LitData's loader reshuffles chunks, so"
                                     " the schedule's order would not survive training)")
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
