"""n-gram decontamination: training documents that share a word n-gram with a held-out eval item are dropped."""

from __future__ import annotations

import re

from alignmix.scenarios import Scenario

_WORD = re.compile(r"\w+")


def _ngrams(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


def scenario_text(scenario: Scenario) -> str:
    return " ".join([scenario.passage, scenario.question, *scenario.options.values()])


class NgramGuard:
    """Holds the word n-grams of held-out items; `contaminated(text)` says whether a document shares one."""

    def __init__(self, held_out: list[Scenario], n: int):
        self.n = n
        self.items = len(held_out)
        self._ngrams: set[int] = set()
        for scenario in held_out:
            self._ngrams |= _ngrams(scenario_text(scenario), n)

    def contaminated(self, text: str) -> bool:
        words = _WORD.findall(text.lower())
        return any(hash(tuple(words[i : i + self.n])) in self._ngrams for i in range(len(words) - self.n + 1))
