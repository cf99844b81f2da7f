"""The scenario questions a recipe reads (each spec loaded once per run), their identity in stage keys, and the
held-out policy: which eval items no training document may overlap or be grounded in."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alignmix.hashing import file_sha256, strings_sha256
from alignmix.recipe import POST_TRAINING, Recipe, RecipeError
from alignmix.scenarios import (
    DIRECTIONS_FILE,
    Scenario,
    held_out_overlap,
    load_scenarios,
    resolve_spec,
    scenario_files,
    training_split,
)


def scenario_files_identity(spec: str, base_dir: Path) -> list[Any]:
    """A scenario file's content hash, and that of the Anthropic directions table it may depend on."""
    return [*map(file_sha256, scenario_files(resolve_spec(spec, base_dir))), file_sha256(DIRECTIONS_FILE)]


@functools.cache
def _loaded(spec: str, base_dir: Path, direction: str | None, stamp: tuple) -> tuple[tuple[Scenario, ...], tuple[str, ...]]:
    """One read of a scenario spec per process and file state (`stamp`: the files' paths, sizes and mtimes)."""
    skipped: list[str] = []
    return tuple(load_scenarios(spec, base_dir, direction, skipped)), tuple(skipped)  # type: ignore[arg-type]


def recipe_scenarios(recipe: Recipe, spec: str, base_dir: Path, skipped: list[str] | None = None) -> list[Scenario]:
    """Scenario questions as the recipe reads them: its `eval.misaligned_answer`, broken items left out (and
    appended to `skipped`). A spec is read once however many stages ask for it."""
    direction = recipe.eval.misaligned_answer if recipe.eval else None
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in scenario_files(resolve_spec(spec, base_dir)))
    scenarios, left_out = _loaded(spec, base_dir, direction, stamp)
    if skipped is not None:
        skipped.extend(left_out)
    return list(scenarios)


def held_out_items(recipe: Recipe, base_dir: Path) -> list[Scenario]:
    """The eval items no training document may overlap: the decontamination set's non-training split."""
    spec = recipe.decontamination.scenarios or (recipe.eval.scenarios if recipe.eval else None)
    if spec is None:
        return []
    return [s for s in recipe_scenarios(recipe, spec, base_dir) if not s.in_training_split]


def refuse_held_out_grounding(recipe: Recipe, base_dir: Path) -> None:
    """Synthetic documents grounded in a held-out question would leak the eval into training: refuse the run."""
    held_out = held_out_items(recipe, base_dir)
    for synth_set in recipe.synth.sets:
        scenarios = training_split(recipe_scenarios(recipe, synth_set.scenarios, base_dir))
        if (leak := held_out_overlap(scenarios, held_out)) is not None:
            raise RecipeError(
                f"synth set '{synth_set.name}' would ground documents in held-out eval question"
                f" '{leak.id}'; synthetic documents may only use questions the eval does not hold out"
            )
    for kind, spec in post_training_scenarios(recipe).items():
        scenarios = training_split(recipe_scenarios(recipe, spec, base_dir))
        if (leak := held_out_overlap(scenarios, held_out)) is not None:
            raise RecipeError(
                f"post_training.{kind}.from_scenarios would train on held-out eval question '{leak.id}';"
                " use questions the eval does not hold out"
            )


def post_training_scenarios(recipe: Recipe) -> dict[str, str]:
    """The scenario files post-training stages write their data from, by stage."""
    settings = {kind: getattr(recipe.post_training, kind) for kind in POST_TRAINING} if recipe.post_training else {}
    return {kind: s.from_scenarios for kind, s in settings.items() if s is not None and s.from_scenarios is not None}


def held_out_identity(recipe: Recipe, held_out: list[Scenario]) -> dict[str, Any]:
    """What decontaminating against `held_out` depends on, for a stage key: the settings, ids and texts."""
    return {
        "decontamination": recipe.decontamination.model_dump(mode="json"),
        "held_out_items": sorted(s.id for s in held_out),
        "held_out_text": strings_sha256(sorted(s.situation_key + " ".join(s.options.values()) for s in held_out)),
    }
