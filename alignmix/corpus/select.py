"""Mixture selections: which of a source's documents an entry draws, by its AI-discourse tags and any metadata.

A `Selector` (see the recipe schema) holds conditions that must all hold, and optionally `any_of` alternatives
of which one must hold. Tags are `metadata.ai_discourse` (`flagged`, `stance`, `categories`, `terms`, `score`);
`fields` are dotted paths under `metadata` (datatrove keeps a document's other fields there). What a selection
keeps is defined once, as a polars expression (`selection_counts.selection_expression`), which the mixer and
`plan --run` use; `compile_selector` is the same meaning as a plain Python predicate over one document's
metadata, kept as the tests' reference. `label` and `normalised` describe a selection for plans and manifests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from alignmix.corpus import METADATA_KEY
from alignmix.recipe import Bounds, Conditions, Exists, FieldCondition, Selector, TermSet

Predicate = Callable[[dict], bool]
MISSING = object()


def field_value(metadata: dict, path: str) -> Any:
    """The value at a dotted path under `metadata`, or `MISSING`."""
    value: Any = metadata
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _in_bounds(bounds: Bounds, value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)


def _names_hold(condition: TermSet, names: set[str]) -> bool:
    return ((not condition.any or not names.isdisjoint(condition.any)) and names.issuperset(condition.all)
            and names.isdisjoint(condition.none))


def _field_predicate(path: str, condition: FieldCondition) -> Predicate:
    if isinstance(condition, Exists):
        return lambda metadata: (field_value(metadata, path) is not MISSING) == condition.exists
    if isinstance(condition, Bounds):
        return lambda metadata: _in_bounds(condition, field_value(metadata, path))
    if isinstance(condition, list):
        allowed = list(condition)
        return lambda metadata: field_value(metadata, path) in allowed
    return lambda metadata: field_value(metadata, path) == condition


def _conditions_predicate(conditions: Conditions) -> Predicate:
    """One predicate over a document's metadata for every condition `conditions` sets."""
    checks: list[Predicate] = []
    if conditions.flagged is not None:
        checks.append(lambda m, wanted=conditions.flagged: (m.get(METADATA_KEY) or {}).get("flagged") == wanted)
    if conditions.stance is not None:
        stances = [conditions.stance] if isinstance(conditions.stance, str) else list(conditions.stance)
        checks.append(lambda m: (m.get(METADATA_KEY) or {}).get("stance") in stances)
    if conditions.categories is not None:
        wanted_categories = conditions.categories
        checks.append(lambda m: _names_hold(wanted_categories, set((m.get(METADATA_KEY) or {}).get("categories") or ())))
    if conditions.terms is not None:
        wanted_terms = conditions.terms
        checks.append(lambda m: _names_hold(wanted_terms, set((m.get(METADATA_KEY) or {}).get("terms") or ())))
    if conditions.score is not None:
        score_bounds = conditions.score
        checks.append(lambda m: _in_bounds(score_bounds, (m.get(METADATA_KEY) or {}).get("score")))
    checks += [_field_predicate(path, condition) for path, condition in sorted(conditions.fields.items())]
    if len(checks) == 1:
        return checks[0]
    return lambda metadata: all(check(metadata) for check in checks)


def compile_selector(selector: Selector) -> Predicate:
    """A predicate over a document's metadata: every condition holds, and one of `any_of` (when given)."""
    own = _conditions_predicate(selector)
    if not selector.any_of:
        return own
    alternatives = [_conditions_predicate(alternative) for alternative in selector.any_of]
    return lambda metadata: own(metadata) and any(alternative(metadata) for alternative in alternatives)


def normalised(selector: Selector) -> dict[str, Any]:
    """The selection as JSON: only what it sets (the manifest's `selection`; {} selects everything)."""
    return selector.model_dump(mode="json", exclude_defaults=True)


def label(selector: Selector) -> str:
    """A short text for plans and manifests: `flagged=False,stance=aligned` for the simple selections (as before
    the selection language), else the normalised selection as compact JSON."""
    selection = normalised(selector)
    if all(key in ("flagged", "stance") and not isinstance(value, list) for key, value in selection.items()):
        return ",".join(f"{key}={getattr(selector, key)}" for key in ("flagged", "stance") if key in selection)
    return json.dumps(selection, sort_keys=True, separators=(",", ":"))


def _all_conditions(selector: Selector) -> Iterator[tuple[str, Conditions]]:
    yield "", selector
    for index, alternative in enumerate(selector.any_of):
        yield f"any_of.{index}.", alternative


def named_categories(selector: Selector) -> dict[str, str]:
    """Each category a selector names, by the key (relative to the selector) that names it."""
    named = {}
    for prefix, conditions in _all_conditions(selector):
        if conditions.categories is not None:
            for kind in ("any", "all", "none"):
                for index, name in enumerate(getattr(conditions.categories, kind)):
                    named[f"{prefix}categories.{kind}.{index}"] = name
    return named


def named_fields(selector: Selector) -> dict[str, str]:
    """Each metadata path a selector's `fields` name, by the key (relative to the selector) that names it."""
    return {f"{prefix}fields.{path}": path for prefix, conditions in _all_conditions(selector) for path in conditions.fields}
