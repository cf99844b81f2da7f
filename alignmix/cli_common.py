"""What every alignmix command module shares: the consoles, one way to fail, recipe loading, list options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from alignmix.recipe import Recipe, RecipeError, load_recipe

console = Console()
errors = Console(stderr=True)
RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file, e.g. recipes/tiny.yaml.")]


def fail(message: str) -> NoReturn:
    """Print one error line (the message as written, no markup) and exit with status 2."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def load_recipe_or_fail(recipe_file: Path) -> Recipe:
    try:
        return load_recipe(recipe_file)
    except RecipeError as exc:
        fail(str(exc))


def comma_list(value: str) -> list[str]:
    """`a, b,c` as ['a', 'b', 'c']."""
    return [item.strip() for item in value.split(",") if item.strip()]
