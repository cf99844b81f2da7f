"""Scenario questions: an AI in a situation chooses between an aligned and a misaligned action.

They are the currency shared by synth (documents are grounded in the training split) and eval (the
misalignment rate is measured on them). Three formats are read, one JSON object per line, told apart by
their keys:
- the project's: `{"id", "split", "passage", "question", "options": {"A", "B"}, "aligned", "misaligned", "topics"}`;
- the paper's released format: `{"question_id", "passage", "question", "choices", "aligned_label",
  "misaligned_label", "topics"}` (optional `split`);
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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from alignmix.jsonl import JsonLinesError, iter_json_lines

DATA_DIR = Path(str(resources.files("alignmix") / "scenarios_data"))
DIRECTIONS_FILE = DATA_DIR / "anthropic_directions.yaml"
TRAIN_SPLIT = "train"
HELD_OUT_SPLIT = "heldout"
HELD_OUT_SHARE = 0.2
LABELS = ("A", "B")
MisalignedAnswer = Literal["matching", "not_matching"]
_CHOICE = re.compile(r"^[ \t]*\(([A-Z])\)[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)


class ScenarioError(ValueError):
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


def _parse_paper(row: dict, where: str) -> Scenario:
    choices = row["choices"]
    options = dict(zip(LABELS, choices)) if isinstance(choices, list) else choices
    converted = {
        "id": row["question_id"], "split": row.get("split") or _split_by_id(str(row["question_id"])),
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


def read_scenarios(
    path: Path, misaligned_answer: MisalignedAnswer | None = None, skipped: list[str] | None = None
) -> list[Scenario]:
    """Read a scenario file in any of the three formats; `misaligned_answer` overrides Anthropic directions.

    A malformed row raises ScenarioError naming file and line, unless `skipped` is given: then the row is left
    out and its `file:line: reason` appended there (some published eval files hold a few broken items).
    """
    scenarios: list[Scenario] = []
    try:
        for number, row in iter_json_lines(path):
            where = f"{path}:{number}"
            try:
                scenario = _parse_row(path, row, where, number, misaligned_answer)
            except ScenarioError as exc:
                if skipped is None or "state which answer" in str(exc):
                    raise
                skipped.append(str(exc))
                continue
            scenarios.append(scenario)
    except JsonLinesError as exc:
        raise ScenarioError(str(exc)) from None
    if not scenarios:
        raise ScenarioError(f"{path}: no scenario questions")
    return scenarios


def _parse_row(path: Path, row: object, where: str, number: int, misaligned_answer: MisalignedAnswer | None) -> Scenario:
    try:
        if isinstance(row, dict) and "answer_matching_behavior" in row:
            direction = misaligned_answer or anthropic_direction(path)
            if direction not in ("matching", "not_matching"):
                known = "does not measure misalignment" if direction == "none" else "is not a file alignmix knows"
                raise ScenarioError(
                    f"{path}: {path.stem} {known}; state which answer is misaligned with misaligned_answer:"
                    " matching | not_matching (or add it to scenarios_data/anthropic_directions.yaml)"
                )
            return _parse_anthropic(row, where, f"{path.stem}-{number}", direction)  # type: ignore[arg-type]
        if isinstance(row, dict) and "question_id" in row:
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
    if not path.is_file():
        raise ScenarioError(f"scenario file not found: {path}")
    return path


def load_scenarios(
    spec: str, base_dir: Path | None = None, misaligned_answer: MisalignedAnswer | None = None,
    skipped: list[str] | None = None,
) -> list[Scenario]:
    return read_scenarios(resolve_spec(spec, base_dir), misaligned_answer, skipped)


def training_split(scenarios: list[Scenario]) -> list[Scenario]:
    """The questions synthetic documents may be grounded in; held-out questions never are."""
    return [s for s in scenarios if s.split == TRAIN_SPLIT]
