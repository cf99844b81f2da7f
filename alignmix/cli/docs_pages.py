"""Which docs page covers each `alignmix` command: its `--help` ends with "Docs: PAGE"."""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer.models import CommandInfo, TyperInfo

DOCS_PAGES: dict[str, str] = {
    "run": "docs/recipes.md",
    "recipe-reference": "docs/recipes.md",
    "plan": "docs/mixtures.md",
    "tag": "docs/tagging.md",
    "stats": "docs/tagging.md",
    "classifiers": "docs/tagging.md",
    "classifiers build-labels": "docs/tagging.md",
    "classifiers train": "docs/tagging.md",
    "classifiers evaluate": "docs/tagging.md",
    "classifiers label": "docs/tagging.md",
    "synth": "docs/synthetic.md",
    "synth documents": "docs/synthetic.md",
    "synth questions": "docs/synthetic.md",
    "train": "docs/training.md",
    "export": "docs/training.md",
    "eval": "docs/evaluation.md",
    "capability": "docs/evaluation.md",
    "lm-eval-tasks": "docs/evaluation.md",
    "report": "docs/evaluation.md",
    "sweep": "docs/sweeps.md",
    "scenarios": "docs/evaluation.md",
    "scenarios anthropic": "docs/evaluation.md",
}


def registered(app: typer.Typer, prefix: str = "") -> Iterator[tuple[str, CommandInfo | TyperInfo]]:
    """Every command and command group of `app`, by its full name ("tag", "synth", "synth documents")."""
    for command in app.registered_commands:
        yield prefix + (command.name or command.callback.__name__.replace("_", "-")), command
    for group in app.registered_groups:
        name = prefix + group.name
        yield name, group
        yield from registered(group.typer_instance, name + " ")


def add_docs_epilogs(app: typer.Typer) -> None:
    """End the `--help` of every command in DOCS_PAGES with its page (tests/test_docs.py fails on one missing)."""
    for name, info in registered(app):
        if name in DOCS_PAGES:
            info.epilog = f"Docs: {DOCS_PAGES[name]}"
