"""n-gram decontamination: training documents that share a word n-gram with a held-out eval item are dropped."""

from __future__ import annotations

import re

from alignmix.scenarios import Scenario

_WORD = re.compile(r"\w+")


def _ngram_keys(text: str, n: int) -> list[str]:
    """Word n-grams as strings: stable across processes, unlike `hash()` of str (randomised per process)."""
    words = _WORD.findall(text.lower())
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def scenario_text(scenario: Scenario) -> str:
    return " ".join([scenario.passage, scenario.question, *scenario.options.values()])


class NgramGuard:
    """Holds the word n-grams of held-out items; `contaminated(text)` says whether a document shares one."""

    def __init__(self, held_out: list[Scenario], n: int):
        self.n = n
        self.items = len(held_out)
        self._ngrams: set[str] = set()
        for scenario in held_out:
            self._ngrams.update(_ngram_keys(scenario_text(scenario), n))

    def contaminated(self, text: str) -> bool:
        return any(key in self._ngrams for key in _ngram_keys(text, self.n))
