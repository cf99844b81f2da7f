"""The token planner: exact apportionment of a stage's tokens over its mixture, refusing the impossible."""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignmix.errors import AlignmixError
from alignmix.recipe import AssumedStatistics, MixtureEntry, Recipe, Selector, TrainingStage


class PlanError(AlignmixError):
    """A mixture that cannot be met: the message names the stage, the entry and the numbers."""


@dataclass(frozen=True)
class SourcePlan:
    name: str
    source: str
    tokens: int
    share: float
    available_tokens: int | None
    repetitions: float | None


@dataclass(frozen=True)
class StagePlan:
    name: str
    tokens: int
    seq_len: int
    sources: list[SourcePlan]

    def as_dict(self) -> dict:
        """The `alignmix plan --json` shape: name, tokens, seq_len, sources [{name, tokens, share, repetitions}]."""
        return {
            "name": self.name, "tokens": self.tokens, "seq_len": self.seq_len,
            "sources": [
                {"name": s.name, "tokens": s.tokens, "share": s.share, "repetitions": s.repetitions}
                for s in self.sources
            ],
        }


def entry_name(entry: MixtureEntry) -> str:
    """A readable label: the source with its selector (e.g. `web[flagged=False]`), or `replay:STAGE`."""
    if entry.replay is not None:
        return f"replay:{entry.replay}"
    selected = {k: v for k, v in entry.select.model_dump().items() if v is not None}
    return f"{entry.source}" + (f"[{','.join(f'{k}={v}' for k, v in selected.items())}]" if selected else "")


def selected_share(statistics: AssumedStatistics, selector: Selector) -> float:
    """The share of a source's tokens a selector keeps, from assumed statistics (stance shares are of the whole)."""
    if selector.stance is not None:
        return statistics.stance_shares.get(selector.stance, 0.0)
    if selector.flagged is None:
        return 1.0
    return statistics.flagged_share if selector.flagged else 1.0 - statistics.flagged_share


def assumed_available(recipe: Recipe, stage: TrainingStage) -> dict[str, int]:
    """Tokens available to each entry from the recipe's assumed statistics; entries without any are left out."""
    stage_tokens = {s.name: s.tokens for s in recipe.stages}
    available: dict[str, int] = {}
    for entry in stage.mixture:
        if entry.replay is not None:
            available[entry_name(entry)] = stage_tokens[entry.replay]
        elif (statistics := recipe.assumed(entry.source or "")) is not None:
            available[entry_name(entry)] = round(statistics.tokens * selected_share(statistics, entry.select))
    return available


def apportion(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder apportionment of `total` in proportion to `weights`; the parts sum to `total`."""
    weight_sum = sum(weights)
    exact = [total * w / weight_sum for w in weights]
    parts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (exact[i] - parts[i], -i), reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def planned_tokens(stage: TrainingStage) -> list[int]:
    """Tokens per entry: absolute counts as given, shares apportioned exactly, `rest` taking what is left."""
    absolute = sum(e.tokens or 0 for e in stage.mixture)
    fractions = [e.share if isinstance(e.share, float) else 0.0 for e in stage.mixture]
    has_rest = any(e.share == "rest" for e in stage.mixture)
    fraction_sum = sum(fractions)
    if not has_rest and not math.isclose(fraction_sum + absolute / stage.tokens, 1.0, rel_tol=0, abs_tol=1e-9):
        covered = fraction_sum + absolute / stage.tokens
        raise PlanError(
            f"stage '{stage.name}': the mixture covers {covered:.4f} of the stage's {stage.tokens:,} tokens and no"
            " entry takes share 'rest'; make the shares add up to 1 or give one entry `share: rest`"
        )
    shared_total = round(stage.tokens * fraction_sum) if has_rest else stage.tokens - absolute
    shares = apportion(shared_total, fractions) if fraction_sum > 0 else [0] * len(fractions)
    tokens = [e.tokens if e.tokens is not None else shares[i] for i, e in enumerate(stage.mixture)]
    if has_rest:
        rest = stage.tokens - sum(tokens)
        if rest <= 0:
            raise PlanError(f"stage '{stage.name}': nothing is left for the 'rest' entry ({rest:,} tokens)")
        tokens = [rest if e.share == "rest" else t for e, t in zip(stage.mixture, tokens)]
    return tokens


def plan_stage(stage: TrainingStage, available: dict[str, int] | None = None) -> StagePlan:
    """Plan a stage; entries with known `available` tokens are checked against their `max_repetitions`."""
    sources = []
    for entry, tokens in zip(stage.mixture, planned_tokens(stage)):
        name = entry_name(entry)
        have = None if available is None else available.get(name)
        repetitions = None
        if have is not None:
            if have == 0:
                raise PlanError(
                    f"stage '{stage.name}', source '{name}': no documents are available to supply {tokens:,} tokens"
                )
            repetitions = tokens / have
            if repetitions > entry.max_repetitions:
                raise PlanError(
                    f"stage '{stage.name}', source '{name}': {tokens:,} planned tokens need {repetitions:,.2f}"
                    f" repetitions of its {have:,} available tokens, but max_repetitions is {entry.max_repetitions:g}"
                )
        origin = entry.source or f"replay:{entry.replay}"
        sources.append(SourcePlan(name, origin, tokens, tokens / stage.tokens, have, repetitions))
    return StagePlan(stage.name, stage.tokens, stage.seq_len, sources)
