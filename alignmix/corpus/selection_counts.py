"""How much of a source's tagged shards each mixture selection keeps, counted with polars (no tokenizing).

`alignmix plan --run RUN` uses this where a source has no `assumed` statistics. Each `Selector` is translated
into one polars expression over the shards' schema (inferred from every document), so the shards are read by
one lazy scan and every selection is counted in the same pass. The translation keeps `select.compile_selector`'s
meaning, with one difference: a field that is present with a JSON null counts as absent, since polars keeps no
difference between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from alignmix.corpus import METADATA_KEY
from alignmix.recipe import Bounds, Conditions, Exists, FieldCondition, Scalar, Selector, TermSet


@dataclass(frozen=True)
class SelectionCount:
    """What one selection keeps of a source's shards."""

    documents: int
    characters: int

    def estimated_tokens(self, chars_per_token: float) -> int:
        return round(self.characters / chars_per_token)


@dataclass(frozen=True)
class _Column:
    """An expression and its polars type, or None for a path that no document holds."""

    expr: pl.Expr
    dtype: pl.DataType | None


def _path(schema: pl.Schema, parts: list[str]) -> _Column:
    """The column at `metadata.<parts>`, walking the struct schema; dtype None where a part is absent."""
    expr: pl.Expr = pl.col("metadata")
    dtype: pl.DataType | None = schema.get("metadata")
    for part in parts:
        fields = {f.name: f.dtype for f in dtype.fields} if isinstance(dtype, pl.Struct) else {}
        if part not in fields:
            return _Column(pl.lit(None), None)
        expr, dtype = expr.struct.field(part), fields[part]
    return _Column(expr, dtype)


def _in_bounds(column: _Column, bounds: Bounds) -> pl.Expr:
    if column.dtype is None or not column.dtype.is_numeric():
        return pl.lit(False)
    held = pl.lit(True)
    if bounds.min is not None:
        held = held & (column.expr >= bounds.min)
    if bounds.max is not None:
        held = held & (column.expr <= bounds.max)
    return held.fill_null(False)


def _matches(value: Scalar, dtype: pl.DataType) -> bool:
    """Whether a recipe value can equal a value of the column's type (as Python's `==` would find it)."""
    if isinstance(value, bool):
        return dtype == pl.Boolean
    if isinstance(value, (int, float)):
        return dtype.is_numeric()
    return dtype == pl.String


def _equals_one_of(column: _Column, values: list[Scalar]) -> pl.Expr:
    if column.dtype is None:
        return pl.lit(False)
    usable = [v for v in values if _matches(v, column.dtype)]
    if not usable:
        return pl.lit(False)
    return column.expr.is_in(usable).fill_null(False)


def _field(schema: pl.Schema, path: str, condition: FieldCondition) -> pl.Expr:
    column = _path(schema, path.split("."))
    if isinstance(condition, Exists):
        present = pl.lit(False) if column.dtype is None else column.expr.is_not_null()
        return present if condition.exists else ~present
    if isinstance(condition, Bounds):
        return _in_bounds(column, condition)
    return _equals_one_of(column, list(condition) if isinstance(condition, list) else [condition])


def _has_name(column: _Column, name: str) -> pl.Expr:
    """Whether a tag holding names (categories: a list; terms: a mapping, read as a struct) holds `name`."""
    if column.dtype is None:
        return pl.lit(False)
    if isinstance(column.dtype, pl.List):
        return column.expr.list.contains(name).fill_null(False)
    if isinstance(column.dtype, pl.Struct) and name in {f.name for f in column.dtype.fields}:
        return column.expr.struct.field(name).is_not_null()
    return pl.lit(False)


def _term_set(schema: pl.Schema, key: str, condition: TermSet) -> pl.Expr:
    column = _path(schema, [METADATA_KEY, key])
    held = pl.lit(True)
    if condition.any:
        held = held & pl.any_horizontal([_has_name(column, n) for n in condition.any])
    for name in condition.all:
        held = held & _has_name(column, name)
    for name in condition.none:
        held = held & ~_has_name(column, name)
    return held


def _conditions(schema: pl.Schema, conditions: Conditions) -> pl.Expr:
    held = pl.lit(True)
    if conditions.flagged is not None:
        held = held & _equals_one_of(_path(schema, [METADATA_KEY, "flagged"]), [conditions.flagged])
    if conditions.stance is not None:
        stances = [conditions.stance] if isinstance(conditions.stance, str) else list(conditions.stance)
        held = held & _equals_one_of(_path(schema, [METADATA_KEY, "stance"]), stances)
    if conditions.categories is not None:
        held = held & _term_set(schema, "categories", conditions.categories)
    if conditions.terms is not None:
        held = held & _term_set(schema, "terms", conditions.terms)
    if conditions.score is not None:
        held = held & _in_bounds(_path(schema, [METADATA_KEY, "score"]), conditions.score)
    for path, condition in sorted(conditions.fields.items()):
        held = held & _field(schema, path, condition)
    return held


def selection_expression(selector: Selector, schema: pl.Schema) -> pl.Expr:
    """A boolean polars expression: every condition of `selector` holds, and one of `any_of` (when given)."""
    held = _conditions(schema, selector)
    if selector.any_of:
        held = held & pl.any_horizontal([_conditions(schema, alternative) for alternative in selector.any_of])
    return held


def count_selections(shards: list[Path], selectors: list[Selector]) -> list[SelectionCount]:
    """Documents and characters each selector keeps of the shards (jsonl or jsonl.gz), in one lazy scan."""
    if not shards:
        return [SelectionCount(0, 0) for _ in selectors]
    scan = pl.scan_ndjson(shards, infer_schema_length=None)
    schema = scan.collect_schema()
    characters = pl.col("text").str.len_chars().cast(pl.Int64)
    flags = {f"selected_{i}": selection_expression(s, schema) for i, s in enumerate(selectors)}  # one per document
    sums = {}
    for index in range(len(selectors)):
        selected = pl.col(f"selected_{index}")
        sums[f"documents_{index}"] = selected.cast(pl.Int64).sum()
        sums[f"characters_{index}"] = pl.when(selected).then(characters).otherwise(0).sum()
    row = scan.with_columns(**flags).select(**sums).collect().row(0, named=True)
    return [SelectionCount(int(row[f"documents_{i}"]), int(row[f"characters_{i}"])) for i in range(len(selectors))]
