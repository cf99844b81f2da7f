"""The token planner: exact apportionment of a stage's tokens over its mixture, refusing the impossible."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from alignmix.corpus.select import label, normalised
from alignmix.errors import AlignmixError
from alignmix.recipe import AssumedStatistics, MixtureEntry, Recipe, ShareSchedule, TrainingStage

if TYPE_CHECKING:
    from alignmix.corpus.schedule import WindowPlan

CHARS_PER_TOKEN = 4.0  # a rule of thumb for English BPE text, used only where no tokenizer exists yet


class PlanError(AlignmixError):
    """A mixture that cannot be met: the message names the stage, the entry and the numbers."""


@dataclass(frozen=True)
class SourcePlan:
    name: str
    source: str
    tokens: int | None  # None: a `share: natural` entry whose available tokens are known only after tagging
    share: float | None
    available_tokens: int | None
    repetitions: float | None
    selection: str = ""  # the entry's selection, as `label` writes it ("" selects everything)


@dataclass(frozen=True)
class StagePlan:
    name: str
    tokens: int
    seq_len: int
    sources: list[SourcePlan]
    windows: list[WindowPlan] = field(default_factory=list)  # a scheduled stage's windows (`corpus.schedule`)

    def as_dict(self) -> dict:
        """The `alignmix plan --json` shape: name, tokens, seq_len, sources [{name, tokens, share, repetitions,
        selection}], and for a scheduled stage windows [{start, end, tokens (per source)}]."""
        planned = {
            "name": self.name, "tokens": self.tokens, "seq_len": self.seq_len,
            "sources": [
                {"name": s.name, "tokens": s.tokens, "share": s.share, "repetitions": s.repetitions,
                 "selection": s.selection}
                for s in self.sources
            ],
        }
        if self.windows:
            planned["windows"] = [{"start": w.start, "end": w.end, "tokens": w.tokens} for w in self.windows]
        return planned


def entry_name(entry: MixtureEntry) -> str:
    """A readable label: the source with its selection (e.g. `web[flagged=False]`), or `replay:STAGE`."""
    if entry.replay is not None:
        return f"replay:{entry.replay}"
    selection = label(entry.select)
    return f"{entry.source}" + (f"[{selection}]" if selection else "")


def selected_share(statistics: AssumedStatistics, entry: MixtureEntry) -> float | None:
    """The share of a source's tokens an entry's selection keeps, from assumed statistics: the entry's own
    `assumed_share`, else what `flagged_share` and `stance_shares` say (shares of the whole source), else None
    for a selection they cannot tell."""
    if entry.assumed_share is not None:
        return entry.assumed_share
    selection = normalised(entry.select)
    if not selection:
        return 1.0
    if set(selection) == {"stance"} and isinstance(entry.select.stance, str):
        return statistics.stance_shares.get(entry.select.stance, 0.0)
    if set(selection) == {"flagged"}:
        return statistics.flagged_share if entry.select.flagged else 1.0 - statistics.flagged_share
    return None


def assumed_available(recipe: Recipe, stage: TrainingStage) -> dict[str, int]:
    """Tokens available to each entry from the recipe's assumed statistics; entries without any are left out."""
    stage_tokens = {s.name: s.tokens for s in recipe.stages}
    available: dict[str, int] = {}
    for entry in stage.mixture:
        if entry.replay is not None:
            available[entry_name(entry)] = stage_tokens[entry.replay]
        elif (statistics := recipe.assumed(entry.source or "")) is not None:
            if (share := selected_share(statistics, entry)) is not None:
                available[entry_name(entry)] = round(statistics.tokens * share)
    return available


SAMPLE_DOCUMENTS = 2000  # documents read to measure characters per token


def measured_chars_per_token(shards: list[Path], tokenizer_dir: Path) -> float:
    """Characters per token (end-of-text included, as the token store counts) over the first documents of
    `shards`, with the tokenizer in `tokenizer_dir`."""
    from itertools import islice

    from alignmix.checkpoints.tokenizer import load_tokenizer
    from alignmix.jsonl import read_jsonl_gz

    tokenizer, _ = load_tokenizer(tokenizer_dir)
    texts = [str(row.get("text") or "") for row in islice(read_jsonl_gz(shards), SAMPLE_DOCUMENTS)]
    tokens = sum(len(e.ids) + 1 for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    return sum(map(len, texts)) / tokens if tokens else CHARS_PER_TOKEN


def recipe_tokenizer(recipe: Recipe, run_dir: Path) -> Path | None:
    """The tokenizer the recipe's mixtures use, where it exists yet: the run's, else the recipe's own file."""
    for folder in (run_dir / "tokenizer", recipe.tokenizer.path, recipe.base_model and recipe.base_model.path):
        if folder is not None and (Path(folder) / "tokenizer.json").is_file():
            return Path(folder)
    return None


def counted_available(recipe: Recipe, stage: TrainingStage, run_dir: Path,
                      chars_per_token: float | None = None) -> dict[str, int]:
    """Tokens available to each entry without assumed statistics, from the run: exact where the source's tokens
    stage has run (its selection over the token store); else estimated from the tagged (or synthetic) shards as
    the characters its selection keeps (polars) over `chars_per_token`, by default measured on a sample with the
    recipe's tokenizer (4.0 only where no tokenizer exists yet)."""
    from alignmix.corpus.mix import select_documents
    from alignmix.corpus.selection_counts import count_selections
    from alignmix.corpus.stage import source_shards
    from alignmix.outputs import STORE_FILE, TokenStore

    by_source: dict[str, list[MixtureEntry]] = {}
    for entry in stage.mixture:
        if entry.source is not None and recipe.assumed(entry.source) is None:
            by_source.setdefault(entry.source, []).append(entry)
    available: dict[str, int] = {}
    tokenizer = recipe_tokenizer(recipe, run_dir)
    for source, entries in sorted(by_source.items()):
        store = TokenStore(run_dir / "tokens" / source)
        if (store.folder / STORE_FILE).is_file():
            for entry in entries:
                available[entry_name(entry)] = int(select_documents(store, entry.select).lengths.sum())
            continue
        written_by = run_dir / ("tag" if recipe.source_kind(source) == "corpus" else "synth") / source
        shards = source_shards(written_by)
        if not shards:
            raise PlanError(f"stage '{stage.name}', source '{source}': no shards in {written_by / 'data'} to count"
                            " from; run the recipe's tag (and synth) stages first, or give the source `assumed`"
                            " statistics")
        ratio = chars_per_token or (measured_chars_per_token(shards, tokenizer) if tokenizer else CHARS_PER_TOKEN)
        for entry, count in zip(entries, count_selections(shards, [e.select for e in entries])):
            available[entry_name(entry)] = count.estimated_tokens(ratio)
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


def natural_weights(entries: list[MixtureEntry], available: dict[str, int]) -> list[float] | None:
    """The `share: natural` entries' weights, available^(1/temperature); None while any availability is unknown."""
    if any(entry_name(e) not in available for e in entries):
        return None
    return [available[entry_name(e)] ** (1.0 / (e.temperature or 1.0)) for e in entries]


def planned_tokens(stage: TrainingStage, available: dict[str, int] | None = None) -> list[int | None]:
    """Tokens per entry: absolute counts as given, shares apportioned exactly, `rest` taking what is left, or the
    `share: natural` entries splitting it by available tokens (None where those are not known yet)."""
    absolute = sum(e.tokens or 0 for e in stage.mixture)
    fractions = [e.share if isinstance(e.share, float) else 0.0 for e in stage.mixture]
    natural = [e for e in stage.mixture if e.share == "natural"]
    has_rest = any(e.share == "rest" for e in stage.mixture) or bool(natural)
    fraction_sum = sum(fractions)
    if not has_rest and not math.isclose(fraction_sum + absolute / stage.tokens, 1.0, rel_tol=0, abs_tol=1e-9):
        covered = fraction_sum + absolute / stage.tokens
        raise PlanError(
            f"stage '{stage.name}': the mixture covers {covered:.4f} of the stage's {stage.tokens:,} tokens and no"
            " entry takes share 'rest' or 'natural'; make the shares add up to 1 or give one entry `share: rest`"
        )
    shared_total = round(stage.tokens * fraction_sum) if has_rest else stage.tokens - absolute
    shares = apportion(shared_total, fractions) if fraction_sum > 0 else [0] * len(fractions)
    tokens: list[int | None] = [e.tokens if e.tokens is not None else shares[i] for i, e in enumerate(stage.mixture)]
    if not has_rest:
        return tokens
    left = stage.tokens - sum(t for e, t in zip(stage.mixture, tokens) if e.share not in ("rest", "natural"))  # type: ignore[misc]
    if left <= 0:
        kind = "'natural' entries" if natural else "'rest' entry"
        raise PlanError(f"stage '{stage.name}': nothing is left for the {kind} ({left:,} tokens)")
    if not natural:
        return [left if e.share == "rest" else t for e, t in zip(stage.mixture, tokens)]
    weights = natural_weights(natural, available or {})
    if weights is None:
        return [None if e.share == "natural" else t for e, t in zip(stage.mixture, tokens)]
    if sum(weights) == 0:
        raise PlanError(f"stage '{stage.name}': the 'natural' entries have no available tokens to split {left:,} by")
    split = iter(apportion(left, weights))
    return [next(split) if e.share == "natural" else t for e, t in zip(stage.mixture, tokens)]


def scheduled_tokens(stage: TrainingStage, available: dict[str, int] | None) -> tuple[list[int | None],
                                                                                    list[WindowPlan]]:
    """A stage with a share schedule: tokens per entry (the sums of its windows) and the windows."""
    from alignmix.corpus.schedule import plan_windows

    natural = [e for e in stage.mixture if e.share == "natural"]
    weights = natural_weights(natural, available or {}) if natural else None
    if weights is not None and natural and sum(weights) == 0:
        raise PlanError(f"stage '{stage.name}': the 'natural' entries have no available tokens to split by")
    windows = plan_windows(stage, [entry_name(e) for e in stage.mixture], weights)
    columns = [[w.tokens[i] for w in windows] for i in range(len(stage.mixture))]
    return [None if None in column else sum(column) for column in columns], windows  # type: ignore[misc]


def plan_stage(stage: TrainingStage, available: dict[str, int] | None = None) -> StagePlan:
    """Plan a stage (with windows where an entry's share is a schedule); entries with known `available` tokens
    are checked against their `max_repetitions`."""
    windows: list[WindowPlan] = []
    if any(isinstance(e.share, ShareSchedule) for e in stage.mixture):
        planned, windows = scheduled_tokens(stage, available)
    else:
        planned = planned_tokens(stage, available)
    sources = []
    for entry, tokens in zip(stage.mixture, planned):
        name = entry_name(entry)
        have = None if available is None else available.get(name)
        repetitions = None
        if have is not None and tokens is not None:
            if have == 0 and tokens:
                raise PlanError(
                    f"stage '{stage.name}', source '{name}': no documents are available to supply {tokens:,} tokens"
                )
            repetitions = tokens / have if have else 0.0  # a zero dose of an empty selection is no repetition
            if repetitions > entry.max_repetitions:
                raise PlanError(
                    f"stage '{stage.name}', source '{name}': {tokens:,} planned tokens need {repetitions:,.2f}"
                    f" repetitions of its {have:,} available tokens, but max_repetitions is {entry.max_repetitions:g}"
                )
        origin = entry.source or f"replay:{entry.replay}"
        share = None if tokens is None else tokens / stage.tokens
        selection = "" if entry.replay is not None else label(entry.select)
        sources.append(SourcePlan(name, origin, tokens, share, have, repetitions, selection))
    return StagePlan(stage.name, stage.tokens, stage.seq_len, sources, windows)
