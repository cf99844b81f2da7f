"""What every alignmix command module shares: the consoles, one way to fail, loading and running a recipe, list options."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from alignmix.errors import AlignmixError
from alignmix.recipe import Recipe, RecipeError, load_recipe

if TYPE_CHECKING:
    from alignmix.run import Graph, Stage
    from alignmix.train.launch import Launch

console = Console()
errors = Console(stderr=True)
RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file, e.g. recipes/tiny.yaml.")]


def report_error(message: str) -> None:
    """Print one error line: the message as written, no markup."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def hold_output(ctx: typer.Context, output: Path, option: str, file: bool = False) -> None:
    """Hold the lock of the folder `output` (or, with `file`, of that one file) until the command `ctx` ends, as
    `alignmix run` holds its run folder's: a second command writing there is refused, naming this one."""
    from alignmix.run import run_folder_lock

    ctx.with_resource(run_folder_lock(output.parent, option, output.name) if file else run_folder_lock(output, option))


def fail(message: str) -> NoReturn:
    """Print one error line and exit with status 2."""
    report_error(message)
    raise typer.Exit(code=2)


SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, KEY=VALUE with KEY a dotted path (stages.0.tokens=1000000,"
                               " synth.sets.0.scenarios=DIR/data); repeatable."),
]


NodesOpt = Annotated[int | None, typer.Option("--nodes", min=1, help="Nodes (overrides the recipe's num_nodes).")]
GpusPerNodeOpt = Annotated[
    int | None, typer.Option("--gpus-per-node", min=0, help="GPUs per node (overrides the recipe's devices); 0: one"
                                                            " CPU process per node.")
]
PartitionOpt = Annotated[str | None, typer.Option("--partition", help="Slurm partition.")]
TimeOpt = Annotated[str | None, typer.Option("--time", help="Slurm time limit, e.g. 48:00:00.")]
CpusPerTaskOpt = Annotated[int, typer.Option("--cpus-per-task", min=1, help="With --launcher slurm: CPUs per task.")]


def load_recipe_or_fail(recipe_file: Path, overrides: list[str] | None = None) -> Recipe:
    try:
        return load_recipe(recipe_file, overrides or ())
    except RecipeError as exc:
        fail(str(exc))


def comma_list(value: str) -> list[str]:
    """`a, b,c` as ['a', 'b', 'c']."""
    return [item.strip() for item in value.split(",") if item.strip()]


def recipe_default(model: type[BaseModel], name: str) -> Any:
    """The default of a recipe field, for the option that sets the same thing: one source for both."""
    return model.model_fields[name].default


def recipe_range(model: type[BaseModel], name: str) -> dict[str, Any]:
    """A recipe field's `ge` / `le` bounds as typer's `min` / `max`, so that the option accepts what the recipe does."""
    bounds: dict[str, Any] = {}
    for constraint in model.model_fields[name].metadata:  # annotated_types' Ge and Le, among others
        if getattr(constraint, "ge", None) is not None:
            bounds["min"] = constraint.ge
        if getattr(constraint, "le", None) is not None:
            bounds["max"] = constraint.le
    return bounds


def run_recipe(
    recipe: Recipe, recipe_file: Path, run_dir: Path, launch: Launch | None = None,
    only: Callable[[Graph], list[Stage]] | None = None, store: Path | None = None,
) -> dict:
    """Run the recipe's stages (or those `only` keeps) into `run_dir` and return the manifest; any alignmix
    error ends the command with one message."""
    from alignmix.corpus.stage import check_run_outside_inputs
    from alignmix.graph import build_graph, check_runnable, continuations_in
    from alignmix.run import Runner
    from alignmix.train.launch import LOCAL

    try:
        check_run_outside_inputs(recipe, run_dir)
        check_runnable(recipe)
        stages = build_graph(recipe, recipe_file.parent, launch or LOCAL, continuations_in(recipe, run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "recipe": recipe.name,
            "recipe_file": str(recipe_file),
            "recipe_sha256": hashlib.sha256(recipe_file.read_bytes()).hexdigest(),
            "seed": recipe.seed,
            "settings": recipe.model_dump(mode="json"),
        }
        runner = Runner(run_dir, only(stages) if only else stages, info,
                        echo=lambda line: console.print(line, highlight=False, soft_wrap=True), store=store)
        return runner.run()
    except AlignmixError as exc:
        fail(f"{exc}\n(the run folder keeps what finished; fix this and rerun to continue)")
