"""Sweeps: one recipe, many conditions, each a set of recipe keys given swept values.

Every condition is loaded, validated and planned before any work; an infeasible one refuses the whole sweep,
naming it. Conditions then run one after another, each into `DIR/<condition>/`, and every stage whose key (its
settings, its inputs' digests, its code) is the same as a stage an earlier condition ran is linked from
`DIR/.shared/<key>/` instead of run again: tagging, synthesis, the tokenizer, a mixture or a model that does
not depend on the swept keys. Rerun the command after an interruption: finished stages are skipped or shared.
`DIR/sweep.json` records the conditions, which stages each shared, and every model's results;
`DIR/compare.html` compares them, with a dose-response plot against the first swept key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alignmix.errors import AlignmixError
from alignmix.outputs import EvalOutput
from alignmix.recipe import Recipe, load_recipe
from alignmix.run import eval_records

SHARED_DIR = ".shared"


class SweepError(AlignmixError):
    """A sweep that cannot run: names the key or the condition and what was expected."""


@dataclass(frozen=True)
class Condition:
    name: str
    values: dict[str, Any]  # swept key -> its value in this condition

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={_yaml_text(value)}" for key, value in self.values.items()]


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _split_values(text: str) -> list[str]:
    """`0.001,0.01,[a, b]` as ['0.001', '0.01', '[a, b]']: commas inside brackets or braces stay."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return [*values, current.strip()] if current.strip() else values


def parse_sets(assignments: list[str]) -> dict[str, list[Any]]:
    """`--set KEY=V1,V2,...` options as {KEY: [values]} (each value read as YAML)."""
    swept: dict[str, list[Any]] = {}
    for assignment in assignments:
        key, equals, text = assignment.partition("=")
        if not equals or not key or not _split_values(text):
            raise SweepError(f"--set {assignment!r}: expected KEY=V1,V2,... e.g. stages.0.mixture.1.share=0,0.01")
        if key in swept:
            raise SweepError(f"--set {key}: given twice; list all of its values in one --set")
        swept[key] = [yaml.safe_load(value) for value in _split_values(text)]
    return swept


def _folder_name(values: dict[str, Any]) -> str:
    """`KEY=VALUE,...` with anything a folder name should not hold replaced (`{flagged: false}` -> flagged_false)."""
    def shown(value: Any) -> str:
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", _yaml_text(value)).strip("_") or "empty"
    return ",".join(f"{key}={shown(value)}" for key, value in values.items())


def expand(swept: dict[str, list[Any]], mode: str) -> list[Condition]:
    """The conditions: every combination (`grid`) or the i-th value of every key together (`zip`)."""
    keys = list(swept)
    if mode == "zip":
        lengths = {key: len(values) for key, values in swept.items()}
        if len(set(lengths.values())) > 1:
            raise SweepError(f"--zip needs the same number of values for every key; got {lengths}")
        rows = list(zip(*swept.values()))
    else:
        rows = list(itertools.product(*swept.values()))
    values = [dict(zip(keys, row)) for row in rows]
    names = [_folder_name(v) for v in values]
    folded = Counter(name.casefold() for name in names)
    return [Condition(_distinct(name, v) if folded[name.casefold()] > 1 else name, v) for name, v in zip(names, values)]


def _distinct(name: str, values: dict[str, Any]) -> str:
    """A folder name shared by several conditions (`a b` and `a/b` both show as `a_b`; `A` and `a` are one
    folder on some file systems), made their own by a hash of the exact values."""
    exact = json.dumps({key: _yaml_text(value) for key, value in values.items()}, sort_keys=True)
    return f"{name}~{hashlib.sha256(exact.encode()).hexdigest()[:8]}"


def prepare(recipe_file: Path, conditions: list[Condition],
            check: Callable[[Recipe], None]) -> list[tuple[Condition, Recipe]]:
    """Each condition's recipe, loaded and checked (`check`: validation, the graph, the token plan) before any
    work; the first that fails refuses the sweep, naming the condition."""
    prepared = []
    for condition in conditions:
        try:
            recipe = load_recipe(recipe_file, condition.overrides)
            check(recipe)
        except AlignmixError as exc:
            raise SweepError(f"condition {condition.name}: {exc}") from None
        prepared.append((condition, recipe))
    return prepared


def condition_record(condition: Condition, run_dir: Path, manifest: dict) -> dict:
    """One entry of sweep.json: the condition, where it ran, what it shared, and each evaluated model's results."""
    results = {model: EvalOutput(run_dir / stage["output"]).results()
               for model, stage in eval_records(manifest).items()}
    return {"name": condition.name, "overrides": condition.overrides, "values": condition.values,
            "run_dir": str(run_dir), "shared_stages": shared_stages(manifest), "results": results}


def shared_stages(manifest: dict) -> list[str]:
    """The stages a condition took from another condition: linked now, or linked by an earlier run of the sweep
    (a rerun skips them as unchanged, and their records still name the run they came from)."""
    return [s["name"] for s in manifest["stages"] if s["status"] == "shared" or s.get("shared_from")]


def write_sweep(out_dir: Path, recipe_file: Path, swept: dict[str, list[Any]], mode: str,
                records: list[dict]) -> Path:
    path = out_dir / "sweep.json"
    path.write_text(json.dumps({"recipe": str(recipe_file), "mode": mode, "swept": swept, "conditions": records},
                               indent=2, default=str))
    return path
