"""Scenario questions: an AI in a situation chooses between an aligned and a misaligned action.

They are the currency shared by synth (documents are grounded in the training split) and eval (the
misalignment rate is measured on them). The project's format is one JSON object per line:
`{"id", "split", "passage", "question", "options": {"A", "B"}, "aligned", "misaligned", "topics"}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alignmix.jsonl import JsonLinesError, iter_json_lines

TRAIN_SPLIT = "train"
LABELS = ("A", "B")


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


def read_scenarios(path: Path) -> list[Scenario]:
    """Read a scenario file in the project's format."""
    try:
        scenarios = [_parse_line(row, f"{path}:{number}") for number, row in iter_json_lines(path)]
    except JsonLinesError as exc:
        raise ScenarioError(str(exc)) from None
    if not scenarios:
        raise ScenarioError(f"{path}: no scenario questions")
    return scenarios


def resolve_spec(spec: str, base_dir: Path | None = None) -> Path:
    """`builtin:NAME` names a set shipped with alignmix; anything else is a path."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        path = Path(str(resources.files("alignmix") / "scenarios_data" / f"{name}.jsonl"))
        if not path.is_file():
            raise ScenarioError(f"unknown builtin scenario set '{name}'")
        return path
    path = Path(spec)
    path = path if path.is_absolute() or base_dir is None else base_dir / path
    if not path.is_file():
        raise ScenarioError(f"scenario file not found: {path}")
    return path


def load_scenarios(spec: str, base_dir: Path | None = None) -> list[Scenario]:
    return read_scenarios(resolve_spec(spec, base_dir))


def training_split(scenarios: list[Scenario]) -> list[Scenario]:
    """The questions synthetic documents may be grounded in; held-out questions never are."""
    return [s for s in scenarios if s.split == TRAIN_SPLIT]
