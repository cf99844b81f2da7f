"""Reading a recipe file: YAML (duplicate keys and alias bombs refused), `extends`, `--set KEY=VALUE` and
`${ENV}` references, then validation."""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from alignmix.recipe.base import RecipeError
from alignmix.recipe.paths import Anchored, anchor
from alignmix.recipe.schema import Recipe, parse_recipe

def merge_recipe_data(base: Any, override: Any) -> Any:
    """Deep-merge `override` into `base`: mappings key by key, lists of named mappings by `name`, else replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge_recipe_data(base[key], value) if key in base else value
        return merged
    if _named_list(base) and _named_list(override):
        by_name = {item["name"]: item for item in base}
        for item in override:
            by_name[item["name"]] = merge_recipe_data(by_name[item["name"]], item) if item["name"] in by_name else item
        return list(by_name.values())
    return override


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int, first_line: int):
        super().__init__(f"duplicate key '{key}' (first given on line {first_line}); give each key once")
        self.line = line


MAX_EXPANDED_VALUES = 100_000  # a recipe's YAML nodes with every alias expanded; real recipes have a few hundred


class _AliasBomb(Exception):
    pass


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes `node` stands for once every alias in it is expanded (each node counted once per use)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise _AliasBomb("an alias refers to a value that contains it")
    open_nodes.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_EXPANDED_VALUES:
            raise _AliasBomb(f"its aliases (*name) expand it to more than {MAX_EXPANDED_VALUES:,} values")
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently), and a
    document whose aliases expand it beyond `MAX_EXPANDED_VALUES` (an alias bomb) before building it."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in first_lines:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, first_lines[key])
            if isinstance(key, typing.Hashable):
                first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(data: Any, path: Path, key: str = "") -> Any:
    """`${NAME}` (or `${NAME:-default}`) in a recipe's string values replaced by the environment variable; a
    relative path that starts with one resolves against the current folder, like a `--set` value. An empty
    variable counts as not set."""
    if isinstance(data, dict):
        return {name: _expand_env(value, path, f"{key}.{name}" if key else str(name)) for name, value in data.items()}
    if isinstance(data, list):
        return [_expand_env(value, path, f"{key}.{i}") for i, value in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def value_of(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        raise RecipeError(f"{path}: key '{key}': environment variable {name} is not set (the recipe reads"
                          f" {data!r}); set it, e.g. `{name}=... alignmix ...`, or override the key with --set")

    expanded = ENV_REFERENCE.sub(value_of, data)
    if data.startswith("${"):
        return Anchored(expanded, Path.cwd())
    return Anchored(expanded, data.base_dir) if isinstance(data, Anchored) else expanded


def _is_recipe_mapping(data: Any) -> bool:
    """A mapping whose top-level keys are recipe keys or close misspellings of them (the schema then names those)."""
    keys = [*Recipe.model_fields, "extends"]
    return isinstance(data, dict) and bool(data) and all(
        isinstance(key, str) and difflib.get_close_matches(key, keys, n=1) for key in data
    )


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> Any:
    """Read a recipe file, following `extends: OTHER.yaml` (relative to the file) and merging over it."""
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else ""
        raise RecipeError(f"{path}: recipe file not found{where}")
    if path.resolve() in chain:
        raise RecipeError(f"{path}: `extends` forms a cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise RecipeError(f"{path}:{exc.line}: {exc}") from None
    except _AliasBomb as exc:
        raise RecipeError(f"{path}: refused: {exc}; write the values out instead") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe file: {exc.strerror}") from None
    if chain and not _is_recipe_mapping(data):  # say nothing of its content: it may be any file, even a secret
        raise RecipeError(f"{path}: not a recipe (extended by {chain[-1]}): expected a mapping of recipe keys"
                          f" ({', '.join(Recipe.model_fields)})")
    if isinstance(data, dict) and "extends" in data:
        parent = data.pop("extends")
        if not isinstance(parent, str):
            raise RecipeError(f"{path}: key 'extends': expected the path of another recipe file")
        data = merge_recipe_data(_read_yaml(path.parent / parent, (*chain, path.resolve())), data)
    return anchor(data, path.parent.resolve()) if chain else data  # an extended file's paths are relative to itself


def apply_override(data: Any, assignment: str) -> Any:
    """`KEY=VALUE` applied to recipe data: KEY is the dotted path the errors use (`stages.0.tokens`,
    `synth.sets.0.scenarios`), VALUE is read as YAML (`0.01`, `[a, b]`, `{flagged: false}`, text). List items
    must exist; a mapping key the file leaves to its default is created, and an unknown one is then refused by
    the schema, naming it."""
    key, equals, text = assignment.partition("=")
    if not equals or not key:
        raise RecipeError(f"--set {assignment!r}: expected KEY=VALUE, e.g. stages.0.tokens=1000000")
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, _DuplicateKey, _AliasBomb) as exc:
        raise RecipeError(f"--set {key}: the value {text!r} is not valid YAML ({exc})") from None
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and isinstance(node.setdefault(part, {}), (dict, list)):
            node = node[part]
        else:
            raise RecipeError(f"--set {key}: the recipe has no key '{here}'")
    leaf = parts[-1]
    value = anchor(value, Path.cwd())  # a path given on the command line is relative to where it was typed
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise RecipeError(f"--set {key}: '{leaf}' is not an index of the {len(node)} items there")
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise RecipeError(f"--set {key}: '{'.'.join(parts[:-1])}' holds a value, not keys")
    return data


def load_recipe(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe YAML file, with `KEY=VALUE` overrides applied (see `apply_override`); relative
    paths in it resolve against its folder (an override's, against the current folder)."""
    path = Path(path)
    data = _read_yaml(path)
    for assignment in overrides:
        data = apply_override(data, assignment)
    data = _expand_env(data, path)  # after the overrides: a key set with --set needs no variable
    return parse_recipe(data, source=str(path) + (f" with --set {', '.join(overrides)}" if overrides else ""),
                        base_dir=path.parent)
