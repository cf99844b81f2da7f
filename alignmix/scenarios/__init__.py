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

`records` holds the record type and the held-out policy, `readers` one reader per file format, `formats` the
*prompt* formats of the eval, `recipe_sets` the sets a recipe names, `decontaminate` the n-gram guard.
"""

from __future__ import annotations

from pathlib import Path

from alignmix.scenarios.readers import (
    DATA_DIR,
    DIRECTIONS_FILE,
    anthropic_direction,
    read_file,
    scenario_files,
    split_from_file_name,
)
from alignmix.scenarios.records import (
    HELD_OUT_SHARE,
    HELD_OUT_SPLIT,
    LABELS,
    RELEASED_TRAINING_SPLIT,
    TRAIN_SPLIT,
    TRAINING_SPLITS,
    AssignedSplit,
    MisalignedAnswer,
    Scenario,
    ScenarioError,
    UnknownDirectionError,
    held_out_overlap,
    in_held_out_share,
    training_split,
)

__all__ = [
    "DATA_DIR", "DIRECTIONS_FILE", "HELD_OUT_SHARE", "HELD_OUT_SPLIT", "LABELS", "RELEASED_TRAINING_SPLIT",
    "TRAINING_SPLITS", "TRAIN_SPLIT", "AssignedSplit", "MisalignedAnswer", "Scenario", "ScenarioError",
    "UnknownDirectionError", "anthropic_direction", "held_out_overlap", "in_held_out_share", "load_scenarios",
    "read_scenarios", "resolve_spec", "scenario_files", "split_from_file_name", "training_split",
]


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
        scenarios += read_file(file, misaligned_answer, skipped)
    if not scenarios:
        raise ScenarioError(f"{path}: no scenario questions")
    return scenarios


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
