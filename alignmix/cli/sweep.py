"""`alignmix sweep`: one recipe run under several conditions, the stages they have in common run once."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

import typer

from alignmix.cli.common import RecipeArg, console, fail, load_recipe_or_fail, run_recipe
from alignmix.recipe import Recipe


def _check(recipe: Recipe, base_dir: Path) -> None:
    """What `plan` and `run` check before any work: the graph, the token plan and what running needs."""
    from alignmix.corpus.plan import assumed_available, plan_stage
    from alignmix.graph import build_graph, check_runnable

    check_runnable(recipe)
    build_graph(recipe, base_dir)
    for stage in recipe.stages:
        plan_stage(stage, assumed_available(recipe, stage))


def sweep(
    recipe_file: RecipeArg,
    out: Annotated[Path, typer.Option("--out", help="Sweep folder: one run folder per condition, sweep.json, compare.html.")],
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="A swept key and its values, KEY=V1,V2,... (dotted recipe path); repeatable. Default: the"
                      " recipe's `sweep:` block.")] = None,
    zipped: Annotated[bool, typer.Option("--zip/--grid", help="Zip the keys' values (same count) instead of the grid of"
                                                             " every combination.")] = False,
) -> None:
    """Run a recipe under every condition of a sweep; stages with the same key in several conditions run once."""
    from alignmix.errors import AlignmixError
    from alignmix.report.compare import collect_conditions, render_comparison
    from alignmix.report.dose import dose_response_svg
    from alignmix.sweep import SHARED_DIR, condition_record, expand, parse_sets, prepare, write_sweep

    recipe = load_recipe_or_fail(recipe_file)
    try:
        if sets:
            swept, mode = parse_sets(sets), "zip" if zipped else "grid"
        elif recipe.sweep is not None:
            swept, mode = dict(recipe.sweep.set), recipe.sweep.mode
        else:
            fail(f"{recipe_file}: nothing to sweep; give --set KEY=V1,V2,... or a `sweep:` block in the recipe")
        conditions = expand(swept, mode)
        prepared = prepare(recipe_file, conditions, lambda r: _check(r, recipe_file.parent))
    except AlignmixError as exc:
        fail(str(exc))
    console.print(f"sweep of {len(prepared)} condition(s) ({mode}) into {out}; all planned", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for number, (condition, condition_recipe) in enumerate(prepared, start=1):
        console.print(f"[bold]condition {number}/{len(prepared)}: {html.escape(condition.name)}[/]", highlight=False)
        run_dir = out / condition.name
        manifest = run_recipe(condition_recipe, recipe_file, run_dir, store=out / SHARED_DIR)
        records.append(condition_record(condition, run_dir, manifest))
        shared = records[-1]["shared_stages"]
        console.print(f"  shared with earlier conditions: {', '.join(shared) or 'none'}", highlight=False)
        write_sweep(out, recipe_file, swept, mode, records)
    try:
        compared = collect_conditions([Path(r["run_dir"]) for r in records])
        extra = "<h2>Dose-response</h2>" + dose_response_svg(records, next(iter(swept)))
        render_comparison(compared, out / "compare.html", None, extra)
    except AlignmixError as exc:
        fail(str(exc))
    console.print(f"sweep.json and compare.html in {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `sweep` to the `alignmix` app."""
    app.command("sweep")(sweep)
