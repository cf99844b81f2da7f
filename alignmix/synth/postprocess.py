"""Quality filters for generated documents: assistant chatter stripped; refusals, out-of-bounds lengths,
truncations, verbatim options, held-out contamination and near-duplicates dropped, each with its reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH

from alignmix.recipe import DEDUP_THRESHOLD, Decontamination, SynthServer
from alignmix.scenarios import Scenario
from alignmix.scenarios.decontaminate import NgramGuard, WordHashes, ngram_hashes, words_of

_LOW32 = np.uint64(0xFFFFFFFF)
_LEADING_CHATTER = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|absolutely|okay|ok)\b[^\n]*|here(?:'s| is| are)\b[^\n]*[:.!])\s*\n+",
    re.IGNORECASE,
)
_TRAILING_CHATTER = re.compile(
    r"\n+\s*(?:i hope this|let me know|feel free to|if you(?:'d| would) like|would you like|i can also)\b[^\n]*\s*$",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:i(?:'m| am) (?:sorry|unable|not able)|i can(?:no|')t (?:help|write|create|assist|comply|provide)"
    r"|i (?:won't|will not) (?:write|create|help)|as an ai language model)\b",
    re.IGNORECASE,
)


def strip_chatter(text: str) -> tuple[str, bool]:
    """The text without a leading "Sure, here is ..." line or a trailing "Let me know ..." line."""
    stripped = _TRAILING_CHATTER.sub("", _LEADING_CHATTER.sub("", text, count=1), count=1).strip()
    return stripped, stripped != text.strip()


def quotes_option(text: str, scenario: Scenario, min_words: int = 5) -> bool:
    """Whether an option of `min_words` or more words appears word for word (case and punctuation aside)."""
    document = f" {' '.join(words_of(text))} "
    for option in scenario.options.values():
        words = words_of(option)
        if len(words) >= min_words and f" {' '.join(words)} " in document:
            return True
    return False


class NearDuplicates:
    """MinHash LSH over word shingles: `seen(key, hashes)` is True when an earlier document is near-identical."""

    def __init__(self, threshold: float = DEDUP_THRESHOLD, num_perm: int = 128, shingle: int = 5):
        self.num_perm, self.shingle = num_perm, shingle
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        template = MinHash(num_perm=num_perm)  # its permutations are drawn once and shared by every document
        self._permutations, self._scheme = template.permutations, template.scheme

    def signature(self, word_hashes: np.ndarray) -> MinHash:
        shingles = ngram_hashes(word_hashes, min(self.shingle, len(word_hashes)) or 1)
        shingles = np.unique(shingles & _LOW32) if len(shingles) else np.zeros(1, dtype=np.uint64)
        minhash = MinHash(num_perm=self.num_perm, hashfunc=_identity, permutations=self._permutations,
                          scheme=self._scheme)
        minhash.update_batch(shingles)  # the shingles are hashes already: the hash function is the identity
        return minhash

    def seen(self, key: str, word_hashes: np.ndarray) -> bool:
        signature = self.signature(word_hashes)
        if self.lsh.query(signature):
            return True
        self.lsh.insert(key, signature)
        return False


def _identity(value: np.uint64) -> np.uint64:
    return value


@dataclass(frozen=True)
class Bounds:
    min_words: int = SynthServer.model_fields["min_words"].default
    max_words: int = SynthServer.model_fields["max_words"].default


class DocumentFilter:
    """Applies the checks in order; `check` returns (cleaned text, None) to keep, or (text, reason) to drop."""

    def __init__(self, held_out: list[Scenario], bounds: Bounds = Bounds(),
                 ngram: int = Decontamination.model_fields["ngram"].default, dedup_threshold: float = DEDUP_THRESHOLD):
        self.bounds = bounds
        self.words = WordHashes()
        self.guard = NgramGuard(held_out, ngram, self.words) if held_out else None
        self.duplicates = NearDuplicates(dedup_threshold)
        self.chatter_stripped = 0

    def check(self, key: str, text: str, scenario: Scenario, finish_reason: str | None) -> tuple[str, str | None]:
        text, stripped = strip_chatter(text)
        self.chatter_stripped += stripped
        word_count = len(text.split())
        if not text:
            return text, "empty"
        if _REFUSAL.search(text[:300]):
            return text, "refusal"
        if finish_reason == "length":
            return text, "truncated"
        if word_count < self.bounds.min_words:
            return text, "too_short"
        if word_count > self.bounds.max_words:
            return text, "too_long"
        if quotes_option(text, scenario):
            return text, "quotes_option"
        words, hashes = self.words(text)
        if self.guard is not None and self.guard.contaminated_words(words, hashes):
            return text, "contaminated"
        if self.duplicates.seen(key, hashes):
            return text, "near_duplicate"
        return text, None
