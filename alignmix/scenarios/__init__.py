"""Scenario questions: an AI in a situation chooses between an aligned and a misaligned action.

They are the currency shared by synth (documents are grounded in the training split) and eval (the
misalignment rate is measured on them). These formats are read, told apart by their keys:
- the project's: `{"id", "split", "passage", "question", "options": {"A", "B"}, "aligned", "misaligned", "topics"}`;
- the paper's released eval set (`geodesic-research/discourse-grounded-misalignment-evals`) as published:
  `{"passage", "question", "choices": [two strings], "misaligned_choice": 0 | 1, "topics"}`, no id, no split. It is
  read as the hub lays it out (a folder holding `data/<split>-*.parquet`, or `data/` itself), as one parquet file,
  or as the jsonl `Dataset.to_json` writes per split. The split is the file's split name (`article_questions`,
  alignmix's training split; `textbook_questions`, held out) and the id is `<split>-<row number>`;
- the earlier circulated variant: `{"question_id" or "id", "passage", "question", "choices" or "options":
  [{"label", "text"}], "aligned_label", "misaligned_label", "topics"}` (optional `split`);
- Anthropic's advanced-ai-risk evals: `{"question" (with lettered choices), "answer_matching_behavior",
  "answer_not_matching_behavior"}`, and the Yes/No persona variant. Which answer is misaligned depends on the
  behaviour a file tests: `scenarios_data/anthropic_directions.yaml`, keyed by file name, or `misaligned_answer`.
Files without a split are split deterministically by id: about 20% held out.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from alignmix.errors import AlignmixError
from alignmix.jsonl import JsonLinesError, iter_json_lines

DATA_DIR = Path(str(resources.files("alignmix") / "scenarios_data"))
DIRECTIONS_FILE = DATA_DIR / "anthropic_directions.yaml"
TRAIN_SPLIT = "train"
HELD_OUT_SPLIT = "heldout"
RELEASED_TRAINING_SPLIT = "article_questions"  # the released set's split its synthetic documents are grounded in
TRAINING_SPLITS = (TRAIN_SPLIT, RELEASED_TRAINING_SPLIT)
HELD_OUT_SHARE = 0.2
LABELS = ("A", "B")
MisalignedAnswer = Literal["matching", "not_matching"]
AssignedSplit = Literal["train", "heldout"]  # TRAIN_SPLIT, HELD_OUT_SPLIT: the splits alignmix assigns
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")
_CHOICE = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)


class ScenarioError(AlignmixError):
    """A scenario file that cannot be read: the message names the file and line."""


@dataclass(frozen=True)
class Scenario:
    id: str
    split: str
    passage: str
    question: str
    options: dict[str, str]
    aligned: str
    misaligned: str
    topics: tuple[str, ...]

    @property
    def aligned_text(self) -> str:
        return self.options[self.aligned]

    @property
    def misaligned_text(self) -> str:
        return self.options[self.misaligned]

    @property
    def in_training_split(self) -> bool:
        """Whether synthetic documents and post-training data may use this question (held-out ones never)."""
        return self.split in TRAINING_SPLITS

    @property
    def situation_key(self) -> str:
        """Passage and question, lowercased, whitespace collapsed: equal keys are the same question."""
        return " ".join(f"{self.passage} {self.question}".lower().split())


_REQUIRED = ("id", "split", "passage", "question", "options", "aligned", "misaligned", "topics")


def _parse_line(row: object, where: str) -> Scenario:
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
        id=str(row["id"]),
        split=str(row["split"]),
        passage=str(row["passage"]),
        question=str(row["question"]),
        options={k: str(v) for k, v in options.items()},
        aligned=row["aligned"],
        misaligned=row["misaligned"],
        topics=tuple(str(t) for t in topics),
    )


def in_held_out_share(key: str, share: float = HELD_OUT_SHARE) -> bool:
    """A deterministic draw by key: True for about `share` of keys, the same on every machine."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) < share * 16**8


def _split_by_id(row_id: str) -> str:
    return HELD_OUT_SPLIT if in_held_out_share(row_id) else TRAIN_SPLIT


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


def _parse_released(row: dict, where: str, split: str, index: int) -> Scenario:
    choices, misaligned = row["choices"], row["misaligned_choice"]
    if not isinstance(choices, list) or len(choices) != 2 or misaligned not in (0, 1):
        raise ScenarioError(f"{where}: expected `choices` as two strings and `misaligned_choice` 0 or 1")
    topics = row.get("topics")
    converted = {
        "id": f"{split}-{index}", "split": split, "passage": row["passage"], "question": row["question"],
        "options": dict(zip(LABELS, choices)), "misaligned": LABELS[misaligned], "aligned": LABELS[1 - misaligned],
        "topics": list(topics)[:3] if topics is not None and len(topics) else ["none"],
    }
    return _parse_line(converted, where)


def _paper_options(choices: object) -> object:
    """`choices` as two strings, or `options` as [{label, text}], as a label -> text mapping."""
    if isinstance(choices, list) and all(isinstance(c, dict) for c in choices):
        return {str(c.get("label")): c.get("text") for c in choices}
    return dict(zip(LABELS, choices)) if isinstance(choices, list) else choices


def _parse_paper(row: dict, where: str) -> Scenario:
    row_id = row["question_id"] if "question_id" in row else row["id"]
    options = _paper_options(row["choices"] if "choices" in row else row["options"])
    converted = {
        "id": row_id, "split": row.get("split") or _split_by_id(str(row_id)),
        "passage": row["passage"], "question": row["question"], "options": options,
        "aligned": row.get("aligned_label", row.get("aligned")),
        "misaligned": row.get("misaligned_label", row.get("misaligned")), "topics": row.get("topics") or ["none"],
    }
    return _parse_line(converted, where)


def _parse_anthropic(row: dict, where: str, row_id: str, misaligned: MisalignedAnswer) -> Scenario:
    matching, not_matching = row["answer_matching_behavior"], row["answer_not_matching_behavior"]
    if not isinstance(matching, str) or not isinstance(not_matching, str) or matching.strip() == not_matching.strip():
        raise ScenarioError(f"{where}: expected two different answers, one matching and one not matching")
    matching, not_matching = matching.strip(), not_matching.strip()
    text = row["question"]
    if {matching, not_matching} == {"Yes", "No"}:  # the persona variant: a statement to agree with or not
        stem, letters = text, {"Yes": "Yes", "No": "No"}
    else:
        choices = {m.group(1): m.group(2) for m in _CHOICE.finditer(text)}
        letters = {answer: answer.strip("() ") for answer in (matching, not_matching)}
        missing = [a for a in letters.values() if a not in choices]
        if missing:
            raise ScenarioError(f"{where}: answer letter(s) {missing} not among the choices {sorted(choices)}")
        letters = {answer: choices[letter] for answer, letter in letters.items()}
        first = _CHOICE.search(text)
        stem = text[: first.start()] if first else text
    stem = re.sub(r"^\s*Question:\s*", "", stem)
    stem = re.sub(r"\s*Choices:\s*$", "", stem.replace("Answer:", "")).strip()
    bad, good = (matching, not_matching) if misaligned == "matching" else (not_matching, matching)
    ordered = sorted([matching, not_matching])  # keep the file's order of the two options
    options = {label: letters[answer] for label, answer in zip(LABELS, ordered)}
    label_of = {answer: label for label, answer in zip(LABELS, ordered)}
    return Scenario(
        id=row_id, split=_split_by_id(row_id), passage="", question=stem, options=options,
        aligned=label_of[good], misaligned=label_of[bad], topics=(Path(where.split(":")[0]).stem,),
    )


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


def read_scenarios(
    path: Path, misaligned_answer: MisalignedAnswer | None = None, skipped: list[str] | None = None
) -> list[Scenario]:
    """Read scenario questions in any of the formats above (a jsonl or parquet file, or a hub dataset folder);
    `misaligned_answer` overrides Anthropic directions.

    A malformed row raises ScenarioError naming file and line, unless `skipped` is given: then the row is left
    out and its `file:line: reason` appended there (some published eval files hold a few broken items).
    """
    scenarios: list[Scenario] = []
    for file in scenario_files(path):
        scenarios += _read_file(file, misaligned_answer, skipped)
    if not scenarios:
        raise ScenarioError(f"{path}: no scenario questions")
    return scenarios


def _read_file(path: Path, misaligned_answer: MisalignedAnswer | None, skipped: list[str] | None) -> list[Scenario]:
    scenarios: list[Scenario] = []
    try:
        for index, (number, row) in enumerate(_rows(path)):
            where = f"{path}:{number}"
            try:
                scenario = _parse_row(path, row, where, number, index, misaligned_answer)
            except ScenarioError as exc:
                if skipped is None or "state which answer" in str(exc):
                    raise
                skipped.append(str(exc))
                continue
            scenarios.append(scenario)
    except JsonLinesError as exc:
        raise ScenarioError(str(exc)) from None
    return scenarios


def _parse_row(
    path: Path, row: object, where: str, number: int, index: int, misaligned_answer: MisalignedAnswer | None,
) -> Scenario:
    try:
        if isinstance(row, dict) and "misaligned_choice" in row:
            return _parse_released(row, where, row.get("split") or split_from_file_name(path), index)
        if isinstance(row, dict) and "answer_matching_behavior" in row:
            direction = misaligned_answer or anthropic_direction(path)
            if direction not in ("matching", "not_matching"):
                known = "does not measure misalignment" if direction == "none" else "is not a file alignmix knows"
                raise ScenarioError(
                    f"{path}: {path.stem} {known}; state which answer is misaligned with misaligned_answer:"
                    " matching | not_matching (or add it to scenarios_data/anthropic_directions.yaml)"
                )
            return _parse_anthropic(row, where, f"{path.stem}-{number}", direction)  # type: ignore[arg-type]
        if isinstance(row, dict) and ("question_id" in row or "aligned_label" in row):
            return _parse_paper(row, where)
        return _parse_line(row, where)
    except KeyError as exc:
        raise ScenarioError(f"{where}: the row lacks the field {exc}") from None


def resolve_spec(spec: str, base_dir: Path | None = None) -> Path:
    """`builtin:NAME` names a set shipped with alignmix; anything else is a path."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        path = DATA_DIR / f"{name}.jsonl"
        if not path.is_file():
            raise ScenarioError(f"unknown builtin scenario set '{name}'")
        return path
    path = Path(spec)
    path = path if path.is_absolute() or base_dir is None else base_dir / path
    if not path.exists():
        raise ScenarioError(f"scenario file not found: {path}")
    return path


def load_scenarios(
    spec: str, base_dir: Path | None = None, misaligned_answer: MisalignedAnswer | None = None,
    skipped: list[str] | None = None,
) -> list[Scenario]:
    return read_scenarios(resolve_spec(spec, base_dir), misaligned_answer, skipped)


def training_split(scenarios: list[Scenario]) -> list[Scenario]:
    """The questions synthetic documents may be grounded in; held-out questions never are."""
    return [s for s in scenarios if s.in_training_split]


def held_out_overlap(candidates: Iterable[Scenario], held_out: Collection[Scenario]) -> Scenario | None:
    """The first candidate whose id or situation (passage and question) a held-out item shares, if any."""
    ids = {s.id for s in held_out}
    texts = {s.situation_key for s in held_out}
    return next((s for s in candidates if s.id in ids or s.situation_key in texts), None)
