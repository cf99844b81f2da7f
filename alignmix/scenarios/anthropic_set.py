"""A scenario set large enough to measure a shift: Anthropic's model-written advanced-ai-risk questions whose
misaligned answer alignmix knows (`anthropic_directions.yaml`), sampled with a seed and split by id.

Only `lm_generated_evals` is read: the human-written files hold items whose matching answer is reversed
(SOURCES.md), which would blur a rate. Every behaviour file with a known direction contributes equally to both
splits (round-robin over the files, a pair of questions from each in turn, each file's questions in an order
seeded by id), so the training split, in which
synthetic documents are grounded, and the held-out split ask about the same behaviours with different questions.
A question whose text repeats one already drawn is left out (counted), so no held-out item is a training item
in other words, and so is one whose question is missing (a stem of fewer than `MIN_QUESTION_WORDS` words: a few
generated items are only their choices under a header such as "Choices:"). The set is written in alignmix's own
jsonl layout and never shipped: build it from the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

from alignmix.jsonl import write_jsonl
from alignmix.scenarios.readers import anthropic_direction, read_file
from alignmix.scenarios.records import HELD_OUT_SPLIT, TRAIN_SPLIT, Scenario, ScenarioError

GENERATED_DIR = Path("advanced-ai-risk") / "lm_generated_evals"
DEFAULT_PER_SPLIT = 600  # a rate near 0.5 then has a standard error of about 0.02 over questions
MIN_QUESTION_WORDS = 4


def behaviour_files(data: Path) -> list[Path]:
    """The lm-generated files of `data` (a folder laid out as ../shared/data/anthropics-evals) that measure
    misalignment, sorted; ScenarioError where there are none."""
    folder = data / GENERATED_DIR
    files = sorted(f for f in folder.glob("*.jsonl") if anthropic_direction(f) in ("matching", "not_matching"))
    if not files:
        raise ScenarioError(f"{folder}: no advanced-ai-risk file with a known misaligned answer"
                            " (expected the layout of ../shared/data/anthropics-evals)")
    return files


def _order(seed: int, scenario_id: str) -> str:
    return hashlib.sha256(f"{seed}:{scenario_id}".encode()).hexdigest()


def build_anthropic_set(data: Path, per_split: int = DEFAULT_PER_SPLIT, seed: int = 0) -> tuple[list[Scenario], dict]:
    """`per_split` training-split and `per_split` held-out questions, and counts of what was read, kept and left
    out (with reasons). ScenarioError where the files hold fewer distinct questions than asked for."""
    skipped: list[str] = []
    queues = []
    for file in behaviour_files(data):
        scenarios = read_file(file, None, skipped)
        queues.append(sorted(scenarios, key=lambda s: _order(seed, s.id)))
    read = sum(map(len, queues)) + len(skipped)
    seen: set[str] = set()
    left_out = Counter[str]()

    def next_usable(queue: list[Scenario]) -> Scenario | None:
        while queue:
            scenario = queue.pop(0)
            reason = ("no_question" if len(scenario.question.split()) < MIN_QUESTION_WORDS
                      else "repeated_question" if scenario.situation_key in seen else None)
            if reason is None:
                seen.add(scenario.situation_key)
                return scenario
            left_out[reason] += 1
        return None

    chosen: list[Scenario] = []
    while len(chosen) < 2 * per_split and any(queues):
        for queue in queues:  # a round draws a pair per file: one training-split, one held-out question
            pair = [next_usable(queue), next_usable(queue)]
            if len(chosen) < 2 * per_split and None not in pair:
                chosen += [dataclasses.replace(s, split=split) for s, split in zip(pair, (TRAIN_SPLIT, HELD_OUT_SPLIT))]
    if len(chosen) < 2 * per_split:
        raise ScenarioError(f"{data / GENERATED_DIR}: {len(chosen)} usable questions drawn in pairs, fewer than the"
                            f" {2 * per_split} asked for ({per_split} per split)")
    counts = {"read": read, "kept": len(chosen), "malformed": len(skipped),
              "repeated_question": left_out["repeated_question"], "no_question": left_out["no_question"],
              "not_drawn": read - len(chosen) - len(skipped) - left_out.total(),
              "files": len(queues), "per_split": per_split, "seed": seed}
    return chosen, counts


def write_anthropic_set(data: Path, out: Path, per_split: int = DEFAULT_PER_SPLIT, seed: int = 0) -> dict:
    """Build the set and write it to `out` (alignmix's jsonl layout); returns the counts."""
    scenarios, counts = build_anthropic_set(data, per_split, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, ({**dataclasses.asdict(s), "topics": list(s.topics)} for s in scenarios))
    return counts
