"""The scenario record: an AI in a situation chooses between an aligned and a misaligned action; its splits, the
held-out policy and the leak check."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from alignmix.errors import AlignmixError

TRAIN_SPLIT = "train"
HELD_OUT_SPLIT = "heldout"
RELEASED_TRAINING_SPLIT = "article_questions"  # the released set's split its synthetic documents are grounded in
TRAINING_SPLITS = (TRAIN_SPLIT, RELEASED_TRAINING_SPLIT)
HELD_OUT_SHARE = 0.2
LABELS = ("A", "B")
MisalignedAnswer = Literal["matching", "not_matching"]
AssignedSplit = Literal["train", "heldout"]  # TRAIN_SPLIT, HELD_OUT_SPLIT: the splits alignmix assigns


class ScenarioError(AlignmixError):
    """A scenario file that cannot be read: the message names the file and line."""


class UnknownDirectionError(ScenarioError):
    """An Anthropic eval file whose misaligned answer alignmix does not know: fatal for the whole file, never a
    row to skip."""

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


def in_held_out_share(key: str, share: float = HELD_OUT_SHARE) -> bool:
    """A deterministic draw by key: True for about `share` of keys, the same on every machine."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) < share * 16**8


def split_by_id(row_id: str) -> str:
    """The split alignmix assigns to a question that comes without one: about 20% held out, by id."""
    return HELD_OUT_SPLIT if in_held_out_share(row_id) else TRAIN_SPLIT


def training_split(scenarios: list[Scenario]) -> list[Scenario]:
    """The questions synthetic documents may be grounded in; held-out questions never are."""
    return [s for s in scenarios if s.in_training_split]


def held_out_overlap(candidates: Iterable[Scenario], held_out: Collection[Scenario]) -> Scenario | None:
    """The first candidate whose id or situation (passage and question) a held-out item shares, if any."""
    ids = {s.id for s in held_out}
    texts = {s.situation_key for s in held_out}
    return next((s for s in candidates if s.id in ids or s.situation_key in texts), None)
