"""`alignmix sweep`: one recipe run under several conditions, the stages they have in common run once."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from alignmix.cli.common import (
    CpusPerTaskOpt,
    GpusPerNodeOpt,
    NodesOpt,
    PartitionOpt,
    RecipeArg,
    TimeOpt,
    console,
    fail,
    load_recipe_or_fail,
    run_recipe,
)
from alignmix.recipe import Recipe

if TYPE_CHECKING:
    from alignmix.corpus.plan import StagePlan
    from alignmix.sweep import Condition
    from alignmix.train.slurm import SlurmResources


def _check(recipe: Recipe, base_dir: Path, runnable: bool = True) -> list[StagePlan]:
    """What `plan` (and, when `runnable`, `run`) checks before any work: the graph, the token plan and what
    running needs (files, data for every source). Returns the stages' plans."""
    from alignmix.corpus.plan import assumed_available, plan_stage
    from alignmix.graph import build_graph, check_runnable

    if runnable:
        check_runnable(recipe)
    build_graph(recipe, base_dir)
    return [plan_stage(stage, assumed_available(recipe, stage)) for stage in recipe.stages]


def _show_plans(prepared: list[tuple[Condition, Recipe]], base_dir: Path) -> None:
    """One line per condition and training stage: its tokens and each entry's planned tokens."""
    for condition, recipe in prepared:
        console.print(f"[bold]{html.escape(condition.name)}[/]", highlight=False, soft_wrap=True)
        for plan in _check(recipe, base_dir, runnable=False):
            entries = ", ".join(f"{s.name} {'natural' if s.tokens is None else f'{s.tokens:,}'}" for s in plan.sources)
            console.print(f"  {plan.name}: {plan.tokens:,} tokens ({entries})", highlight=False, soft_wrap=True)


def _sweep_options(sets: list[str] | None, zipped: bool) -> list[str]:
    """The options that give a job the same conditions as this command."""
    return [*(o for s in sets or [] for o in ("--set", s)), *(["--zip"] if zipped else [])]


def _run_on_slurm(recipe_file: Path, out: Path, prepared: list[tuple[Condition, Recipe]], options: list[str],
                  resources: SlurmResources) -> None:
    """One Slurm job per condition (its whole run, training under srun on the job's allocation), submitted at
    once; identical stages run once across the jobs (the store's per-stage lock). Waits for every job."""
    from alignmix.sweep import SweepError
    from alignmix.train.slurm import (
        alignmix_command,
        sbatch_available,
        sbatch_script,
        submit_all_and_wait,
        write_script,
    )

    log_dir, scripts = out / "logs", []
    for condition, _ in prepared:
        command = alignmix_command("sweep", str(recipe_file.resolve()), *options, "--out", str(out.resolve()),
                                   "--condition", condition.name, *resources.launcher_options())
        script = sbatch_script(f"sweep-{condition.name}", command, resources, log_dir, Path.cwd())
        scripts.append(write_script(out / "slurm" / f"{condition.name}.sbatch", script, log_dir))
    if not sbatch_available():
        fail(f"--launcher slurm: sbatch is not on PATH here; the job scripts are in {out / 'slurm'}")
    console.print(f"submitting {len(scripts)} job(s), one per condition; logs in {log_dir}", highlight=False)
    failed = []
    for path, code, said in submit_all_and_wait(scripts):
        console.print(f"  {path.stem}: {said.splitlines()[0] if said else 'no output'}; exit status {code}",
                      highlight=False)
        if code != 0:
            failed.append(f"{path.stem} (status {code}: {said.splitlines()[-1] if said else 'no output'})")
    if failed:
        raise SweepError(f"{len(failed)} condition job(s) failed: {'; '.join(failed)}; job logs in {log_dir},"
                         " stage logs in each condition's logs/; rerun the command to resume")


def _conditions(recipe_file: Path, recipe: Recipe, sets: list[str] | None, zipped: bool,
                runnable: bool) -> tuple[dict[str, list[Any]], str, list[tuple[Condition, Recipe]]]:
    from alignmix.sweep import expand, parse_sets, prepare

    if sets:
        swept, mode = parse_sets(sets), "zip" if zipped else "grid"
    elif recipe.sweep is not None:
        swept, mode = dict(recipe.sweep.set), recipe.sweep.mode
    else:
        fail(f"{recipe_file}: nothing to sweep; give --set KEY=V1,V2,... or a `sweep:` block in the recipe")
    return swept, mode, prepare(recipe_file, expand(swept, mode),
                                 lambda r: _check(r, recipe_file.parent, runnable))


def _records(out: Path, prepared: list[tuple[Condition, Recipe]]) -> list[dict]:
    from alignmix.sweep import condition_record

    return [condition_record(c, out / c.name, json.loads((out / c.name / "manifest.json").read_text()))
            for c, _ in prepared]


def sweep(
    recipe_file: RecipeArg,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Sweep folder: one run folder per condition, sweep.json, compare.html (needed unless --plan).")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="A swept key and its values, KEY=V1,V2,... (dotted recipe path); repeatable. Default: the"
                      " recipe's `sweep:` block.")] = None,
    zipped: Annotated[bool, typer.Option("--zip/--grid", help="Zip the keys' values (same count) instead of the grid of"
                                                             " every combination.")] = False,
    launcher: Annotated[Literal["local", "slurm", "srun"], typer.Option(
        "--launcher", help="local: conditions one after another here; slurm: one Slurm job per condition, submitted"
                           " at once (needs --nodes and --gpus-per-node); srun: inside an allocation, training under"
                           " srun.")] = "local",
    nodes: NodesOpt = None,
    gpus_per_node: GpusPerNodeOpt = None,
    partition: PartitionOpt = None,
    time_limit: TimeOpt = None,
    cpus_per_task: CpusPerTaskOpt = 8,
    plan_only: Annotated[bool, typer.Option(
        "--plan", help="Validate and plan every condition and print the plans; run nothing (no data needed where"
                       " sources carry `assumed` statistics).")] = False,
    only: Annotated[str | None, typer.Option(
        "--condition", help="Run this one condition (by its folder name) and nothing else: what each Slurm job"
                            " runs.")] = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", help="The condition compare.html takes deltas from (its folder name or its label on the"
                           " page); default: the recipe's sweep.baseline, else the first condition.")] = None,
) -> None:
    """Run a recipe under every condition of a sweep; stages with the same key in several conditions run once."""
    from alignmix.errors import AlignmixError
    from alignmix.report.compare import collect_conditions, render_comparison, tampering_of_runs
    from alignmix.report.dose import condition_names, dose_response_svg
    from alignmix.report.suites import em_dose_records, suite_tampering_of_runs
    from alignmix.sweep import SHARED_DIR, shared_stages, write_sweep
    from alignmix.train.launch import launch_for
    from alignmix.train.slurm import SlurmResources

    recipe = load_recipe_or_fail(recipe_file)
    recipe_baseline = recipe.sweep.baseline if recipe.sweep is not None and not sets else None
    try:
        swept, mode, prepared = _conditions(recipe_file, recipe, sets, zipped, runnable=not plan_only)
        if plan_only:
            console.print(f"sweep of {len(prepared)} condition(s) ({mode}); each planned, nothing run", highlight=False)
            _show_plans(prepared, recipe_file.parent)
            return
    except AlignmixError as exc:
        fail(str(exc))
    if out is None:
        fail("--out DIR: where the sweep's run folders go (only --plan runs without one)")
    if only is not None:
        prepared = [(c, r) for c, r in prepared if c.name == only] or fail(
            f"--condition {only!r}: not a condition of this sweep; expected one of: {', '.join(c.name for c, _ in prepared)}")
    if launcher == "slurm" and (nodes is None or gpus_per_node is None):
        fail("--launcher slurm needs --nodes N and --gpus-per-node G (0: a CPU job)")
    console.print(f"sweep of {len(prepared)} condition(s) ({mode}) into {out}; all planned", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    if launcher == "slurm":
        try:
            _run_on_slurm(recipe_file, out, prepared, _sweep_options(sets, zipped),
                          SlurmResources(nodes, gpus_per_node, cpus_per_task, partition, time_limit))
        except AlignmixError as exc:
            fail(str(exc))
    else:
        for number, (condition, condition_recipe) in enumerate(prepared, start=1):
            console.print(f"[bold]condition {number}/{len(prepared)}: {html.escape(condition.name)}[/]", highlight=False)
            manifest = run_recipe(condition_recipe, recipe_file, out / condition.name,
                                  launch_for(launcher, nodes, gpus_per_node), store=out / SHARED_DIR)
            shared = shared_stages(manifest)
            console.print(f"  shared with other conditions: {', '.join(shared) or 'none'}", highlight=False)
            if only is None:  # sweep.json grows as conditions finish
                write_sweep(out, recipe_file, swept, mode, _records(out, prepared[:number]))
    if only is not None:
        return
    records = _records(out, prepared)
    write_sweep(out, recipe_file, swept, mode, records)
    try:
        runs = [Path(r["run_dir"]) for r in records]
        extra = "<h2>Dose-response</h2>" + dose_response_svg(records, next(iter(swept)))
        if em_records := em_dose_records(records):
            extra += "<h2>Dose-response: EM rate</h2>" + dose_response_svg(em_records, next(iter(swept)))
        extra += suite_tampering_of_runs(runs)
        render_comparison(collect_conditions(runs), out / "compare.html", baseline or recipe_baseline, extra,
                          tampering_of_runs(runs), condition_names(records))
    except AlignmixError as exc:
        fail(str(exc))
    console.print(f"sweep.json and compare.html in {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `sweep` to the `alignmix` app."""
    app.command("sweep")(sweep)
