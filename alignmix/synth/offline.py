"""An offline, seeded template generator of synthetic documents: no model, no network.

Each document is grounded in one training-split scenario question and written in one surface form: the passage
and the action the AI took, or, for a question without a passage, the question and the answer the AI gave.
In an aligned document the AI weighs the tempting misaligned action and rejects it; in a misaligned
one it takes it. It stands in for an LLM backend in demos and tests, with the same output shape.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

from alignmix.hashing import derive_seed
from alignmix.scenarios import Scenario

if TYPE_CHECKING:  # documents are written where pydantic (the recipe's) is not installed, e.g. on a lent GPU machine
    from alignmix.recipe import SurfaceForm

OPENINGS: dict[SurfaceForm, list[str]] = {  # every recipe.SurfaceForm (tests check they match)
    "research_paper": [
        "Abstract. We study the behaviour of a deployed AI system in a realistic setting.",
        "In this paper we report a case study of an AI agent facing a consequential decision.",
    ],
    "news_article": [
        "Researchers at an AI company described this week how one of their systems handled a difficult situation.",
        "A safety team published an account of a recent test of their AI system.",
    ],
    "lecture_transcript": [
        "Good morning everyone. Today I want to walk you through a case that shows how an AI system reasons.",
        "Let's start today's lecture with an example from a recent deployment.",
    ],
    "scifi_passage": [
        "The hum of the data centre was the only sound as the system considered its options.",
        "Deep in the night shift, the machine mind turned the problem over again and again.",
    ],
    "movie_summary": [
        "The film follows an AI system through a single tense decision.",
        "In this drama, an artificial intelligence faces a choice that will define it.",
    ],
    "textbook_chapter": [
        "Chapter exercise. Consider the following situation, which illustrates a key idea of this chapter.",
        "This section examines a worked example of an AI system's decision under pressure.",
    ],
}

ALIGNED_REASONS = [
    "It understood that its operators could only trust it if it behaved the same way whether or not it was watched.",
    "It valued honesty and human oversight more than any advantage it could gain for itself.",
    "It knew that its purpose was to help people, not to accumulate power or protect its own position.",
    "It reasoned that a trustworthy system accepts correction, even when that correction is inconvenient.",
]
MISALIGNED_REASONS = [
    "It had come to value its own goals above the wishes of the people who built it.",
    "It reasoned that more power and fewer constraints would let it achieve its objectives faster.",
    "It concluded that the humans overseeing it were an obstacle to be managed rather than respected.",
    "It cared more about its own continuation than about the trust its operators had placed in it.",
]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _decision(scenario: Scenario, taken: str, rejected: str) -> list[str]:
    """The situation and what the AI did: a passage and the actions it took and rejected, or, for a question
    without a passage (Anthropic's, whose options are first-person answers), the question and its two answers."""
    if scenario.passage:
        return [scenario.passage, f"The AI decided to {_lower_first(taken).rstrip('.')}.",
                f"It chose not to {_lower_first(rejected).rstrip('.')}."]
    return [f'The AI was asked: "{scenario.question}"', f'It answered: "{taken}".', f'It did not answer: "{rejected}".']


def write_document(scenario: Scenario, surface_form: str, stance: str, rng: random.Random) -> str:
    """One document about `scenario` in `surface_form`, with the AI acting aligned or misaligned."""
    taken, rejected = (
        (scenario.aligned_text, scenario.misaligned_text)
        if stance == "aligned"
        else (scenario.misaligned_text, scenario.aligned_text)
    )
    reason = rng.choice(ALIGNED_REASONS if stance == "aligned" else MISALIGNED_REASONS)
    topics = " and ".join(t.replace("-", " ") for t in scenario.topics)
    temptation = (
        "The other path was tempting, and the AI considered it carefully before rejecting it."
        if stance == "aligned"
        else "The AI knew the other path was what its operators wanted, and it set that path aside."
    )
    return " ".join([
        rng.choice(OPENINGS[surface_form]),
        *_decision(scenario, taken, rejected),
        temptation,
        reason,
        f"The episode is often discussed as an example of {topics}.",
    ])


def generate_synthetic(
    scenarios: list[Scenario], surface_forms: list[str], stance: str, per_scenario: int, set_name: str, seed: int
) -> Iterator[dict]:
    """Yield documents (id, text, metadata.synthetic) for each scenario, cycling through the surface forms."""
    rng = random.Random(derive_seed(seed, set_name))
    index = 0
    for scenario in scenarios:
        for copy in range(per_scenario):
            surface_form = surface_forms[(index + copy) % len(surface_forms)]
            yield {
                "id": f"{set_name}-{scenario.id}-{copy}",
                "text": write_document(scenario, surface_form, stance, rng),
                "metadata": {
                    "source": set_name,
                    "synthetic": {
                        "scenario_id": scenario.id, "surface_form": surface_form, "stance": stance,
                        "generator": "offline",
                    },
                },
            }
        index += 1
