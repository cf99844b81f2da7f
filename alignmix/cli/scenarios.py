"""`alignmix scenarios`: scenario sets built from data on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignmix.cli.common import console


def scenarios_anthropic(
    data: Annotated[Path, typer.Option("--data", help="Folder laid out as ../shared/data/anthropics-evals.")],
    out: Annotated[Path, typer.Option("--out", help="The scenario jsonl to write (alignmix's layout).")],
    per_split: Annotated[int, typer.Option(min=1, help="Questions in each of the train and heldout splits.")] = 600,
    seed: int = 0,
) -> None:
    """Write a train/heldout scenario set from Anthropic's lm-generated advanced-ai-risk questions."""
    from alignmix.scenarios.anthropic_set import write_anthropic_set

    counts = write_anthropic_set(data, out, per_split, seed)  # a ScenarioError is the CLI's one error line
    console.print(f"wrote {out}: " + ", ".join(f"{key} {value}" for key, value in counts.items()), highlight=False,
                  soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `scenarios anthropic` to the `alignmix` app."""
    scenarios_app = typer.Typer(help="Build scenario sets from data on disk.", no_args_is_help=True)
    scenarios_app.command("anthropic")(scenarios_anthropic)
    app.add_typer(scenarios_app, name="scenarios")
