"""docs/recipe-reference.md is what the schema generates: a key added, renamed or re-documented in alignmix/recipe/
without regenerating the file (`alignmix recipe-reference > docs/recipe-reference.md`) fails here."""

import subprocess
import sys

from conftest import REPO

from alignmix.recipe import Recipe
from alignmix.recipe_reference import reference, rows


def test_the_committed_reference_is_what_the_schema_generates():
    assert (REPO / "docs" / "recipe-reference.md").read_text() == reference()


def test_every_top_level_key_is_in_the_reference_with_its_default_and_bounds():
    keys = {key: (default, bounds) for key, _, default, bounds, _ in rows(Recipe)}
    assert set(Recipe.model_fields) <= set(keys)
    assert keys["stages[].tokens"] == ("required", "> 0")
    assert keys["stages[].mixture[].max_repetitions"] == ("`1.0`", "> 0.0")
    assert "tamper[].from" in keys and "sweep.mode" in keys


def test_the_command_prints_it():
    result = subprocess.run([sys.executable, "-m", "alignmix", "recipe-reference"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == reference()
