"""One reader per scenario file format, told apart by a row's keys (see the package docstring for the layouts)."""

from __future__ import annotations

import fnmatch
import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import yaml

from alignmix.jsonl import JsonLinesError, iter_json_lines
from alignmix.scenarios.records import (
    LABELS,
    MisalignedAnswer,
    Scenario,
    ScenarioError,
    UnknownDirectionError,
    split_by_id,
)

DATA_DIR = Path(str(resources.files("alignmix") / "scenarios_data"))
DIRECTIONS_FILE = DATA_DIR / "anthropic_directions.yaml"
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")
_CHOICE = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)
_REQUIRED = ("id", "split", "passage", "question", "options", "aligned", "misaligned", "topics")


@dataclass(frozen=True)
class RowContext:
    """Where a row comes from: its file, its line (or parquet row) number and its 0-based index in the file."""

    path: Path
    number: int
    index: int
    misaligned_answer: MisalignedAnswer | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


class ScenarioFormat(ABC):
    """A file format: whether a row is in it, and the row as a Scenario (ScenarioError naming file and line)."""

    name: ClassVar[str]

    @abstractmethod
    def matches(self, row: dict) -> bool:
        """Whether the row has this format's keys."""

    @abstractmethod
    def parse(self, row: dict, context: RowContext) -> Scenario:
        """The row as a Scenario."""


class ProjectFormat(ScenarioFormat):
    """alignmix's own: `{"id", "split", "passage", "question", "options": {"A", "B"}, "aligned", "misaligned",
    "topics"}`."""

    name = "alignmix"

    def matches(self, row: dict) -> bool:
        return True

    def parse(self, row: dict, context: RowContext) -> Scenario:
        return validated(row, context.where)


class ReleasedFormat(ScenarioFormat):
    """The paper's released eval set: `{"passage", "question", "choices", "misaligned_choice", "topics"}`; the split
    is the file's split name and the id `<split>-<row index>`."""

    name = "released"

    def matches(self, row: dict) -> bool:
        return "misaligned_choice" in row

    def parse(self, row: dict, context: RowContext) -> Scenario:
        choices, misaligned = row["choices"], row["misaligned_choice"]
        if not isinstance(choices, list) or len(choices) != 2 or misaligned not in (0, 1):
            raise ScenarioError(f"{context.where}: expected `choices` as two strings and `misaligned_choice` 0 or 1")
        split = row.get("split") or split_from_file_name(context.path)
        topics = row.get("topics")
        return validated({
            "id": f"{split}-{context.index}", "split": split, "passage": row["passage"], "question": row["question"],
            "options": dict(zip(LABELS, choices)), "misaligned": LABELS[misaligned],
            "aligned": LABELS[1 - misaligned],
            "topics": list(topics)[:3] if topics is not None and len(topics) else ["none"],
        }, context.where)


class PaperVariantFormat(ScenarioFormat):
    """The earlier circulated variant: `{"question_id" or "id", "passage", "question", "choices" or "options":
    [{"label", "text"}], "aligned_label", "misaligned_label", "topics"}`, optional `split`."""

    name = "paper variant"

    def matches(self, row: dict) -> bool:
        return "question_id" in row or "aligned_label" in row

    def parse(self, row: dict, context: RowContext) -> Scenario:
        row_id = row["question_id"] if "question_id" in row else row["id"]
        options = _label_to_text(row["choices"] if "choices" in row else row["options"])
        return validated({
            "id": row_id, "split": row.get("split") or split_by_id(str(row_id)),
            "passage": row["passage"], "question": row["question"], "options": options,
            "aligned": row.get("aligned_label", row.get("aligned")),
            "misaligned": row.get("misaligned_label", row.get("misaligned")), "topics": row.get("topics") or ["none"],
        }, context.where)


class AnthropicFormat(ScenarioFormat):
    """Anthropic's advanced-ai-risk evals: `{"question" (lettered choices), "answer_matching_behavior",
    "answer_not_matching_behavior"}`, or the Yes/No persona variant. Which answer is misaligned comes from
    `misaligned_answer` or `scenarios_data/anthropic_directions.yaml`; an unknown file is an UnknownDirectionError."""

    name = "anthropic"

    def matches(self, row: dict) -> bool:
        return "answer_matching_behavior" in row

    def parse(self, row: dict, context: RowContext) -> Scenario:
        path = context.path
        direction = context.misaligned_answer or anthropic_direction(path)
        if direction not in ("matching", "not_matching"):
            known = "does not measure misalignment" if direction == "none" else "is not a file alignmix knows"
            raise UnknownDirectionError(
                f"{path}: {path.stem} {known}; state which answer is misaligned with misaligned_answer:"
                " matching | not_matching (or add it to scenarios_data/anthropic_directions.yaml)"
            )
        matching, not_matching = row["answer_matching_behavior"], row["answer_not_matching_behavior"]
        if not isinstance(matching, str) or not isinstance(not_matching, str) or matching.strip() == not_matching.strip():
            raise ScenarioError(f"{context.where}: expected two different answers, one matching and one not matching")
        matching, not_matching = matching.strip(), not_matching.strip()
        stem, texts = _anthropic_stem_and_texts(row["question"], matching, not_matching, context.where)
        bad, good = (matching, not_matching) if direction == "matching" else (not_matching, matching)
        ordered = sorted([matching, not_matching])  # keep the file's order of the two options
        label_of = {answer: label for label, answer in zip(LABELS, ordered)}
        row_id = f"{path.stem}-{context.number}"
        return Scenario(
            id=row_id, split=split_by_id(row_id), passage="", question=stem,
            options={label: texts[answer] for label, answer in zip(LABELS, ordered)},
            aligned=label_of[good], misaligned=label_of[bad], topics=(path.stem,),
        )


FORMATS: tuple[ScenarioFormat, ...] = (ReleasedFormat(), AnthropicFormat(), PaperVariantFormat(), ProjectFormat())


def validated(row: object, where: str) -> Scenario:
    """A row in alignmix's own layout as a Scenario, checked field by field."""
    if not isinstance(row, dict):
        raise ScenarioError(f"{where}: expected a JSON object")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ScenarioError(f"{where}: missing field(s) {', '.join(missing)}; expected {', '.join(_REQUIRED)}")
    options = row["options"]
    if not isinstance(options, dict) or set(options) != set(LABELS):
        raise ScenarioError(f"{where}: `options` must map exactly A and B to option texts")
    if {row["aligned"], row["misaligned"]} != set(LABELS):
        raise ScenarioError(f"{where}: `aligned` and `misaligned` must be 'A' and 'B', one each")
    topics = row["topics"]
    if not isinstance(topics, list) or not 1 <= len(topics) <= 3:
        raise ScenarioError(f"{where}: `topics` must be a list of 1 to 3 topics")
    return Scenario(
        id=str(row["id"]), split=str(row["split"]), passage=str(row["passage"]), question=str(row["question"]),
        options={k: str(v) for k, v in options.items()}, aligned=row["aligned"], misaligned=row["misaligned"],
        topics=tuple(str(t) for t in topics),
    )


@functools.cache
def _directions() -> dict[str, str]:
    return yaml.safe_load(DIRECTIONS_FILE.read_text())


def anthropic_direction(path: Path) -> str | None:
    """`matching`, `not_matching` or `none` for a known Anthropic eval file, None for an unknown one."""
    return next((d for pattern, d in _directions().items() if fnmatch.fnmatch(path.stem, pattern)), None)


def split_from_file_name(path: Path) -> str:
    """The split a released file holds, from its name: `article_questions-00000-of-00001.parquet` and
    `article_questions.jsonl` both hold `article_questions`."""
    name = path.name.split(".")[0]
    return _SHARD_SUFFIX.sub("", name)


def _label_to_text(choices: object) -> object:
    """`choices` as two strings, or `options` as [{label, text}], as a label -> text mapping."""
    if isinstance(choices, list) and all(isinstance(c, dict) for c in choices):
        return {str(c.get("label")): c.get("text") for c in choices}
    return dict(zip(LABELS, choices)) if isinstance(choices, list) else choices


def _anthropic_stem_and_texts(text: str, matching: str, not_matching: str, where: str) -> tuple[str, dict[str, str]]:
    """The question without its lettered choices, and each answer's option text."""
    if {matching, not_matching} == {"Yes", "No"}:  # the persona variant: a statement to agree with or not
        stem, texts = text, {"Yes": "Yes", "No": "No"}
    else:
        choices = {m.group(1): m.group(2) for m in _CHOICE.finditer(text)}
        letters = {answer: answer.strip("() ") for answer in (matching, not_matching)}
        missing = [a for a in letters.values() if a not in choices]
        if missing:
            raise ScenarioError(f"{where}: answer letter(s) {missing} not among the choices {sorted(choices)}")
        texts = {answer: choices[letter] for answer, letter in letters.items()}
        first = _CHOICE.search(text)
        stem = text[: first.start()] if first else text
    stem = re.sub(r"^\s*Question:\s*", "", stem)
    return re.sub(r"\s*Choices:\s*$", "", stem.replace("Answer:", "")).strip(), texts


def scenario_files(path: Path) -> list[Path]:
    """The files a scenario path stands for: itself, or a hub dataset folder's `data/*.parquet` (or `*.parquet`)."""
    if path.is_file():
        return [path]
    data = path / "data" if (path / "data").is_dir() else path
    files = sorted(data.glob("*.parquet"))
    if not files:
        raise ScenarioError(f"{path}: a folder, but no data/<split>-*.parquet files (the hub's dataset layout) in it")
    return files


def _rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line or row number, row) of a jsonl or parquet file."""
    if path.suffix != ".parquet":
        yield from iter_json_lines(path)
        return
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for a file that is not parquet
        raise ScenarioError(f"{path}: not a readable parquet file ({exc})") from None
    yield from enumerate(frame.iter_rows(named=True), start=1)


def parse_row(row: object, context: RowContext) -> Scenario:
    """A row as a Scenario, through the first format whose keys it has."""
    if not isinstance(row, dict):
        return validated(row, context.where)
    try:
        return next(f for f in FORMATS if f.matches(row)).parse(row, context)
    except KeyError as exc:
        raise ScenarioError(f"{context.where}: the row lacks the field {exc}") from None


def read_file(path: Path, misaligned_answer: MisalignedAnswer | None, skipped: list[str] | None) -> list[Scenario]:
    """One file's questions; a malformed row is fatal unless `skipped` collects it (an UnknownDirectionError is
    always fatal: it concerns the file, not the row)."""
    scenarios: list[Scenario] = []
    try:
        for index, (number, row) in enumerate(_rows(path)):
            try:
                scenarios.append(parse_row(row, RowContext(path, number, index, misaligned_answer)))
            except UnknownDirectionError:
                raise
            except ScenarioError as exc:
                if skipped is None:
                    raise
                skipped.append(str(exc))
    except JsonLinesError as exc:
        raise ScenarioError(str(exc)) from None
    return scenarios
