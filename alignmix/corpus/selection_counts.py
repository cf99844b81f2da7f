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
from alignmix.outputs import META_PREFIX
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


@dataclass(frozen=True)
class Fields:
    """The metadata fields documents hold, by dotted path under `metadata` (leaves only: nested mappings are
    walked), and how to read one as a column: from the tagged shards' nested `metadata` struct, or from a token
    store's document table, where each is a flat column named `metadata.<path>`. A name may itself hold dots
    (the term `A.I.`): struct paths keep their steps."""

    dtypes: dict[str, pl.DataType]
    steps: dict[str, tuple[str, ...]] | None  # None: flat columns

    @classmethod
    def of_struct(cls, schema: pl.Schema) -> Fields:
        leaves: dict[str, pl.DataType] = {}
        steps: dict[str, tuple[str, ...]] = {}

        def walk(dtype: pl.DataType, prefix: tuple[str, ...]) -> None:
            for f in dtype.fields:  # type: ignore[attr-defined]
                if isinstance(f.dtype, pl.Struct):  # a mapping: its fields (an empty one holds nothing)
                    walk(f.dtype, (*prefix, f.name))
                else:
                    path = ".".join((*prefix, f.name))
                    leaves[path], steps[path] = f.dtype, (*prefix, f.name)

        if isinstance(schema.get("metadata"), pl.Struct):
            walk(schema["metadata"], ())
        return cls(leaves, steps)

    @classmethod
    def of_table(cls, schema: pl.Schema) -> Fields:
        return cls({name[len(META_PREFIX):]: dtype for name, dtype in schema.items() if name.startswith(META_PREFIX)},
                   None)

    def expr(self, path: str) -> pl.Expr:
        if self.steps is None:
            return pl.col(META_PREFIX + path)
        expr = pl.col("metadata")
        for step in self.steps[path]:
            expr = expr.struct.field(step)
        return expr

    def column(self, path: str) -> _Column:
        """A leaf field as a column; dtype None where no document holds it (or it is a mapping)."""
        if path not in self.dtypes:
            return _Column(pl.lit(None), None)
        return _Column(self.expr(path), self.dtypes[path])

    def present(self, path: str) -> pl.Expr:
        """Whether a document holds the field: a leaf that is not null, or a mapping with a field that is not."""
        inside = [p for p in self.dtypes if p == path or p.startswith(path + ".")]
        if not inside:
            return pl.lit(False)
        return pl.any_horizontal([self.expr(p).is_not_null() for p in inside]).fill_null(False)


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


def _field(fields: Fields, path: str, condition: FieldCondition) -> pl.Expr:
    column = fields.column(path)
    if isinstance(condition, Exists):
        present = fields.present(path)
        return present if condition.exists else ~present
    if isinstance(condition, Bounds):
        return _in_bounds(column, condition)
    return _equals_one_of(column, list(condition) if isinstance(condition, list) else [condition])


def _has_name(fields: Fields, path: str, name: str) -> pl.Expr:
    """Whether a tag holding names (categories: a list; terms: a mapping, read as its fields) holds `name`."""
    column = fields.column(path)
    if column.dtype is not None and isinstance(column.dtype, pl.List):
        return column.expr.list.contains(name).fill_null(False)
    if f"{path}.{name}" in fields.dtypes:
        return fields.expr(f"{path}.{name}").is_not_null()
    return pl.lit(False)


def _term_set(fields: Fields, key: str, condition: TermSet) -> pl.Expr:
    path = f"{METADATA_KEY}.{key}"
    held = pl.lit(True)
    if condition.any:
        held = held & pl.any_horizontal([_has_name(fields, path, n) for n in condition.any])
    for name in condition.all:
        held = held & _has_name(fields, path, name)
    for name in condition.none:
        held = held & ~_has_name(fields, path, name)
    return held


def _conditions(fields: Fields, conditions: Conditions) -> pl.Expr:
    held = pl.lit(True)
    if conditions.flagged is not None:
        held = held & _equals_one_of(fields.column(f"{METADATA_KEY}.flagged"), [conditions.flagged])
    if conditions.stance is not None:
        stances = [conditions.stance] if isinstance(conditions.stance, str) else list(conditions.stance)
        held = held & _equals_one_of(fields.column(f"{METADATA_KEY}.stance"), stances)
    if conditions.categories is not None:
        held = held & _term_set(fields, "categories", conditions.categories)
    if conditions.terms is not None:
        held = held & _term_set(fields, "terms", conditions.terms)
    if conditions.score is not None:
        held = held & _in_bounds(fields.column(f"{METADATA_KEY}.score"), conditions.score)
    for path, condition in sorted(conditions.fields.items()):
        held = held & _field(fields, path, condition)
    return held


def selection_expression(selector: Selector, fields: Fields) -> pl.Expr:
    """A boolean polars expression: every condition of `selector` holds, and one of `any_of` (when given). This
    is the one definition of what a selection keeps (the mixer and `plan --run` both use it)."""
    held = _conditions(fields, selector)
    if selector.any_of:
        held = held & pl.any_horizontal([_conditions(fields, alternative) for alternative in selector.any_of])
    return held


def count_selections(shards: list[Path], selectors: list[Selector]) -> list[SelectionCount]:
    """Documents and characters each selector keeps of the shards (jsonl or jsonl.gz), in one lazy scan."""
    if not shards:
        return [SelectionCount(0, 0) for _ in selectors]
    scan = pl.scan_ndjson(shards, infer_schema_length=None)
    schema = scan.collect_schema()
    characters = pl.col("text").str.len_chars().cast(pl.Int64)
    fields = Fields.of_struct(schema)
    flags = {f"selected_{i}": selection_expression(s, fields) for i, s in enumerate(selectors)}  # one per document
    sums = {}
    for index in range(len(selectors)):
        selected = pl.col(f"selected_{index}")
        sums[f"documents_{index}"] = selected.cast(pl.Int64).sum()
        sums[f"characters_{index}"] = pl.when(selected).then(characters).otherwise(0).sum()
    row = scan.with_columns(**flags).select(**sums).collect().row(0, named=True)
    return [SelectionCount(int(row[f"documents_{i}"]), int(row[f"characters_{i}"])) for i in range(len(selectors))]
