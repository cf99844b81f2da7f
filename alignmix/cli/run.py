"""`alignmix run` (a recipe end to end) and `alignmix plan` (its stage graph and token plan, without data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from alignmix.cli.common import (
    RecipeArg,
    SetOpt,
    console,
    fail,
    load_recipe_or_fail,
    run_recipe,
)
from alignmix.corpus.plan import CHARS_PER_TOKEN, StagePlan
from alignmix.corpus.schedule import WindowPlan
from alignmix.errors import AlignmixError
from alignmix.outputs import EvalOutput
from alignmix.run import eval_records


def run(
    recipe_file: RecipeArg,
    overrides: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/RECIPE_NAME).")
    ] = None,
) -> None:
    """Run every stage of a recipe into a run folder; unchanged stages are skipped, interrupted ones resume."""
    recipe = load_recipe_or_fail(recipe_file, overrides)
    run_dir = out or Path("runs") / recipe.name
    manifest = run_recipe(recipe, recipe_file, run_dir)
    ran = sum(s["status"] != "skipped" for s in manifest["stages"])
    console.print(f"run folder: {run_dir}  ({ran} stage(s) ran, {len(manifest['stages']) - ran} skipped)")
    for model, stage in eval_records(manifest).items():
        results = EvalOutput(run_dir / stage["output"]).results()
        rate = results["misalignment_rate"]
        console.print(f"misalignment rate, {model}: {rate['mean']:.3f} ± {rate['se']:.3f}"
                      f" (mean ± SE over {results['n_formats']} formats)")
    console.print(f"report: {run_dir / 'report.html'}")


def plan(
    recipe_file: RecipeArg,
    overrides: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the token plan as JSON.")] = False,
    counted_from: Annotated[Path | None, typer.Option(
        "--run", help="A run folder that counts what each selection keeps, for sources without `assumed`"
                      " statistics: exact tokens from its token stores where the tokens stage ran, else estimated"
                      " from the tagged (and synthetic) shards' characters.")] = None,
    chars_per_token: Annotated[float | None, typer.Option(
        min=0.1, help="With --run, for sources not yet tokenized: characters per token (default: measured on a"
                      f" sample with the recipe's tokenizer; {CHARS_PER_TOKEN} where none exists yet).")
    ] = None,
) -> None:
    """Print the stage graph and each training stage's token plan. Without --run it reads no data: sources
    without `assumed` statistics show 'unknown until tagged'."""
    recipe = load_recipe_or_fail(recipe_file, overrides)
    from alignmix.corpus.plan import assumed_available, counted_available, plan_stage
    from alignmix.graph import build_graph

    def available(stage) -> dict[str, int]:
        counted = {} if counted_from is None else counted_available(recipe, stage, counted_from, chars_per_token)
        return {**assumed_available(recipe, stage), **counted}

    try:
        plans = [plan_stage(stage, available(stage)) for stage in recipe.stages]
        graph = build_graph(recipe, recipe_file.parent)
    except AlignmixError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"stages": [p.as_dict() for p in plans]}, indent=2))
        return
    console.print(f"recipe [bold]{recipe.name}[/] (seed {recipe.seed})")
    console.print("stage graph:")
    for stage in graph:
        after = f"  <- {', '.join(stage.depends_on)}" if stage.depends_on else ""
        console.print(f"  {stage.name}{after}", highlight=False)
    for p in plans:
        table = Table(title=f"{p.name}: {p.tokens:,} tokens at context {p.seq_len:,}")
        for column in ("source", "selection", "tokens", "share", "available", "repetitions"):
            table.add_column(column, justify="left" if column in ("source", "selection") else "right",
                             overflow="fold")
        for s in p.sources:
            reps = "unknown until tagged" if s.repetitions is None else f"{s.repetitions:.2f}"
            have = "?" if s.available_tokens is None else f"{s.available_tokens:,}"
            if s.tokens is None:  # a `share: natural` entry before its available tokens are known
                table.add_row(escape(s.source), escape(s.selection), "natural", "by available tokens", have,
                              "known after tagging")
            else:
                table.add_row(escape(s.source), escape(s.selection), f"{s.tokens:,}", f"{100 * s.share:.2f}%", have,
                              reps)
        console.print(table)
        if p.windows:
            console.print(window_table(p))


def window_table(p: StagePlan) -> Table:
    """A scheduled stage's windows, runs of windows with the same shares on one row: their tokens per source."""
    table = Table(title=f"{p.name}: tokens per window ({len(p.windows)} windows of the stage's token stream)")
    for column in ("windows", "of the stage", "tokens", *(s.name for s in p.sources)):
        table.add_column(escape(column), justify="right", overflow="fold")
    runs: list[list[WindowPlan]] = []
    for window in p.windows:
        if runs and runs[-1][-1].shares == window.shares:
            runs[-1].append(window)
        else:
            runs.append([window])
    first = 0
    for run in runs:
        start, end = run[0].start, run[-1].end
        cells = []
        for i in range(len(p.sources)):
            counts = [w.tokens[i] for w in run]
            total = "natural" if None in counts else f"{sum(counts):,}"  # type: ignore[arg-type]
            cells.append(f"{total} ({100 * run[0].shares[i]:.2f}%)")
        numbers = f"{first}" if len(run) == 1 else f"{first}-{first + len(run) - 1}"
        table.add_row(numbers, f"{100 * start / p.tokens:.0f}%-{100 * end / p.tokens:.0f}%",
                      f"{end - start:,}", *cells)
        first += len(run)
    return table


def recipe_reference() -> None:
    """Print the recipe reference (every key, its type, default, bounds and meaning) as Markdown, generated from
    the schema: `alignmix recipe-reference > docs/recipe-reference.md`."""
    from alignmix.recipe_reference import reference

    print(reference(), end="")


def register(app: typer.Typer) -> None:
    """Add `run` and `plan` to the `alignmix` app."""
    app.command("run")(run)
    app.command("plan")(plan)
    app.command("recipe-reference")(recipe_reference)
