"""n-gram decontamination: training documents that share a word n-gram with a held-out eval item are dropped.

One guard serves the mixer (`contaminated(text)`) and synth post-processing (`contaminated_words`, on words
already hashed for dedup). A document's n-grams are hashed at once with numpy and looked up in the held-out
items' sorted hashes; a hit is confirmed on the n-gram's text, so the answer is exact. Hashes are xxh64 of
the words (stable across processes, unlike `hash()` of str), so the guard works the same in spawned workers.
"""

from __future__ import annotations

import re

import numpy as np
import xxhash

from alignmix.scenarios import Scenario

_WORD = re.compile(r"\w+")
_PRIME = np.uint64(1_099_511_628_211)
_CACHED_WORDS = 1_000_000  # WordHashes starts afresh past this many distinct words


def words_of(text: str) -> list[str]:
    """Lowercased words, as every check splits them."""
    return _WORD.findall(text.lower())


def scenario_text(scenario: Scenario) -> str:
    return " ".join([scenario.passage, scenario.question, *scenario.options.values()])


class WordHashes:
    """A text's lowercased words and their 64-bit hashes (cached per word), shared by dedup and decontamination."""

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def __call__(self, text: str) -> tuple[list[str], np.ndarray]:
        words = words_of(text)
        cache = self._cache
        if len(cache) > _CACHED_WORDS:
            cache.clear()
        hashes = [cache.get(w) for w in words]
        for i, h in enumerate(hashes):
            if h is None:
                hashes[i] = cache[words[i]] = xxhash.xxh64_intdigest(words[i])
        return words, np.array(hashes, dtype=np.uint64)


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """A polynomial hash of every run of `n` words (uint64 arithmetic wraps)."""
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    out = np.zeros(count, dtype=np.uint64)
    for j in range(n):
        out = out * _PRIME + word_hashes[j : j + count]
    return out


class NgramGuard:
    """Holds the word n-grams of held-out items; `contaminated(text)` says whether a document shares one."""

    def __init__(self, held_out: list[Scenario], n: int, words: WordHashes | None = None):
        self.n = n
        self.items = len(held_out)
        self.words = words or WordHashes()
        self._keys: set[str] = set()
        hashes = []
        for scenario in held_out:
            tokens, token_hashes = self.words(scenario_text(scenario))
            self._keys.update(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
            hashes.append(ngram_hashes(token_hashes, n))
        self._hashes = np.unique(np.concatenate(hashes)) if hashes else np.empty(0, dtype=np.uint64)

    def contaminated(self, text: str) -> bool:
        return self.contaminated_words(*self.words(text))

    def contaminated_words(self, words: list[str], word_hashes: np.ndarray) -> bool:
        """`contaminated` for a text already split and hashed by `self.words`."""
        if not len(self._hashes):
            return False
        grams = ngram_hashes(word_hashes, self.n)
        where = np.minimum(np.searchsorted(self._hashes, grams), len(self._hashes) - 1)  # sorted: binary search
        hits = np.flatnonzero(self._hashes[where] == grams)
        return any(" ".join(words[i : i + self.n]) in self._keys for i in hits)
