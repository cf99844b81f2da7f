"""The mixing sections: what a mixture entry selects and draws, how mixtures are built, and decontamination."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, PlainValidator, PositiveInt, model_validator

from alignmix.recipe.base import NOT_IN_KEY, Identifier, KeyedError, Strict
from alignmix.recipe.corpus import Executor, Stance
from alignmix.recipe.paths import ScenarioSpec

def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


class ShareSchedule(Strict):
    """A share that changes over the stage: piecewise-linear through `[fraction of the stage's tokens, share]`
    points, from fraction 0 to 1; two points at one fraction make a step."""

    schedule: list[tuple[float, float]]
    """[fraction of the stage, share] points, 0 to 1; a step: two at one fraction"""

    def __str__(self) -> str:
        return " ".join(f"{f:g}:{s:g}" for f, s in self.schedule)


def _check_schedule(value: dict) -> ShareSchedule:
    """A `{schedule: [[fraction, share], ...]}` mapping, checked point by point (errors name the point)."""
    if set(value) != {"schedule"} or not isinstance(value["schedule"], list):
        raise ValueError(f"expected {{schedule: [[fraction, share], ...]}}, got {value!r}")
    points = value["schedule"]
    for n, point in enumerate(points):
        if not (isinstance(point, (list, tuple)) and len(point) == 2 and all(map(_is_fraction, point))):
            raise KeyedError(f"schedule.{n}", f"expected a [fraction, share] pair of numbers in [0, 1], got {point!r}")
        if n and point[0] < points[n - 1][0]:
            raise KeyedError(f"schedule.{n}", f"fractions must not decrease: {point[0]:g} comes after {points[n - 1][0]:g}")
        if n > 1 and point[0] == points[n - 2][0]:
            raise KeyedError(f"schedule.{n}", f"at most two points at fraction {point[0]:g} (a step)")
    if len(points) < 2 or points[0][0] != 0 or points[-1][0] != 1:
        raise KeyedError("schedule", "expected points covering the stage: the first at fraction 0, the last at 1,"
                                     f" got {points!r}")
    return ShareSchedule(schedule=[(float(f), float(s)) for f, s in points])


def _check_share(value: Any) -> float | str | ShareSchedule:
    if value in ("rest", "natural") or isinstance(value, ShareSchedule):
        return value
    if _is_fraction(value):
        return float(value)  # 0 keeps the entry in the plan with no tokens (a sweep's zero dose)
    if isinstance(value, dict):
        return _check_schedule(value)
    raise ValueError(f"expected a fraction in [0, 1], 'rest', 'natural' or {{schedule: [[fraction, share], ...]}},"
                     f" got {value!r}")


def _dump_share(value: float | str | ShareSchedule) -> float | str | dict:
    return {"schedule": [list(point) for point in value.schedule]} if isinstance(value, ShareSchedule) else value


Share = Annotated[float | Literal["rest", "natural"] | ShareSchedule, PlainValidator(_check_share),
                  PlainSerializer(_dump_share)]


class TermSet(Strict):
    """Conditions on a list of names (a document's categories or terms): `any` of them present, `all` of them,
    `none` of them."""

    any: list[str] = []
    """at least one of these present (empty: no condition)"""
    all: list[str] = []
    """every one of these present"""
    none: list[str] = []
    """none of these present"""


class Bounds(Strict):
    """A closed range; either end may be left open."""

    min: float | None = None
    """lowest value allowed (inclusive); null: no lower bound; a non-number fails"""
    max: float | None = None
    """highest value allowed (inclusive); null: no upper bound"""


class Exists(Strict):
    exists: bool
    """true: the field must be present; false: it must be absent"""


Scalar = str | int | float | bool
FieldCondition = Scalar | list[Scalar] | Bounds | Exists


class Conditions(Strict):
    """Conditions on a document's tags (`metadata.ai_discourse`) and any metadata field; all must hold."""

    flagged: bool | None = None
    """the blocklist (and classifier) flag; null: either"""
    stance: Stance | list[Stance] | None = None
    """stance, or any of a list (needs tagging.stance_classifier); null: any"""
    categories: TermSet | None = None
    terms: TermSet | None = None
    score: Bounds | None = None
    """the classifier's score; a document without one fails a score condition"""
    fields: dict[str, FieldCondition] = {}
    """dotted paths under `metadata`: a value, values, {min, max} or {exists}"""


class Selector(Conditions):
    """A selection: every condition set here holds, and (when given) at least one of `any_of`'s alternatives."""

    any_of: list[Conditions] = []


class MixtureEntry(Strict):
    """One part of a stage: a source (or a replay of an earlier stage) and its share, token count, or the rest."""

    source: Identifier | None = None
    """a corpus source or synthetic set name"""
    replay: Identifier | None = None
    """an earlier stage's name: draws blocks from its written mixture"""
    select: Selector = Selector()
    share: Share | None = None
    """fraction of the stage's tokens, `rest`, `natural` (split by size) or a schedule"""
    tokens: PositiveInt | None = None
    """absolute token count (instead of `share`)"""
    temperature: Annotated[float, Field(gt=0.0)] | None = None
    """natural shares ~ available^(1/T)"""
    max_repetitions: Annotated[float, Field(gt=0.0)] = 1.0
    """most planned / available tokens; more fails the plan"""
    assumed_share: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """of the source's tokens, to plan"""

    @model_validator(mode="after")
    def _one_origin_and_amount(self) -> MixtureEntry:
        if self.temperature is not None and self.share != "natural":
            raise ValueError("`temperature` applies to `share: natural` entries")
        if (self.source is None) == (self.replay is None):
            raise ValueError("give exactly one of `source` (a corpus or synthetic set) or `replay` (an earlier stage)")
        if self.replay is not None and self.select != Selector():
            raise ValueError("a `replay` entry takes no `select`: it replays the earlier stage's mixture as written")
        if (self.share is None) == (self.tokens is None):
            raise ValueError("give exactly one of `share` (a fraction, 'rest', 'natural' or a schedule) or `tokens`")
        return self


Delivery = Literal["chunks", "stream"]  # how a mixture reaches training (`mixing.delivery`)


class Mixing(Strict):
    """How mixtures are built: `tasks` tokenize a source's shards in parallel, as processes here (`executor:
    local`) or as datatrove tasks on a Ray cluster or a Slurm array (`ray`, `slurm`). The chunks and the
    manifest are the same whatever the executor and the task count."""

    tasks: PositiveInt = 1
    """Parallel tasks per source for tokenizing (at most one per shard), and for writing the chunks."""
    executor: Annotated[Executor, Field(json_schema_extra=NOT_IN_KEY)] = "local"
    """local: processes here; ray: a Ray cluster (RAY_ADDRESS, else a local one); slurm: a Slurm array job, waited
    for."""
    partition: Annotated[str, Field(json_schema_extra=NOT_IN_KEY)] = "debug"
    """With executor slurm: the partition."""
    time: Annotated[str, Field(json_schema_extra=NOT_IN_KEY)] = "04:00:00"
    """With executor slurm: the time limit per task."""
    cpus_per_task: Annotated[PositiveInt, Field(json_schema_extra=NOT_IN_KEY)] = 1
    """With executor slurm: CPUs per task."""
    delivery: Delivery = "chunks"
    """chunks: write LitData chunks (for plain `litgpt pretrain --data LitData`); stream: write none, training reads
    the mixture index and token stores in order (alignmix.train.data.MixtureData; needed by share schedules)."""


class Decontamination(Strict):
    """Drop training documents sharing an n-gram (of words) with a held-out eval item; on by default."""

    enabled: bool = True
    """false: keep training documents that overlap held-out items"""
    ngram: Annotated[int, Field(ge=3)] = 13
    """n-gram length in words"""
    scenarios: ScenarioSpec | None = None
    """default: the eval's scenarios"""
