"""The recipe reference, generated from the schema: every key with its type, default, bounds and what it means.

`alignmix recipe-reference > docs/recipe-reference.md` writes it; a test fails when the committed file differs.
A key's text is its field's attribute docstring (a field a subclass redeclares without one keeps its parent's), or,
for a section without one, the section model's own docstring.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from alignmix import recipe

def _text(doc: str) -> str:
    """A docstring as one line of a table cell (its first paragraph)."""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")


def _field_doc(model: type[BaseModel], name: str) -> str:
    """A field's attribute docstring, from the nearest class in `model`'s MRO that documents it."""
    for cls in model.__mro__:
        info = cls.__dict__.get("__pydantic_fields__", {}).get(name)
        if info is not None and info.description:
            return _text(info.description)
    return ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(f"`{value}`" if isinstance(value, str) else str(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation)).replace("Path", "path")


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for name, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
                             ("pattern", "matches")):
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{symbol} `{value}`" if name == "pattern" else f"{symbol} {value}")
    if info.annotation is not None and "PositiveInt" in str(info.annotation):
        parts.append("> 0")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "(its defaults)"
    return "" if default in (None, [], {}) else f"`{default}`"


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, bounds, meaning) for every key under `model`, depth first."""
    found = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        nested = _models_in(info.annotation)
        is_list = typing.get_origin(info.annotation) is list or "list[" in str(info.annotation)
        meaning = _field_doc(model, name)
        if nested and not meaning:  # the nested model's own docstring (not one it inherits)
            meaning = _text(nested[0].__dict__.get("__doc__") or "")
        found.append((key, _type_name(info.annotation), _default(info), _bounds(info), meaning))
        for sub in nested:
            found += rows(sub, f"{key}[]." if is_list else f"{key}.")
    return found


def reference() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Recipe reference",
        "",
        "Generated from the schema in `alignmix/recipe/` by `alignmix recipe-reference`; do not edit by hand",
        "(a test compares this file with what the schema generates). `[]` marks a list of mappings.",
        "",
        "| key | type | default | bounds | meaning |",
        "|---|---|---|---|---|",
    ]
    for key, kind, default, bounds, meaning in rows(recipe.Recipe):
        cells = [f"`{key}`", kind, default, bounds, meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
