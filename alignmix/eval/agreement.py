"""How far two labellers agree: Cohen's kappa between judges, accuracy against human labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two label sequences over the same items; None without items. Where both labellers give
    one label to everything (chance agreement 1), kappa is 1.0 if they agree and 0.0 otherwise."""
    if len(a) != len(b):
        raise ValueError(f"label sequences differ in length ({len(a)} and {len(b)})")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[label] * count_b[label] for label in count_a) / n**2
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float | None:
    """The share of items where `predicted` equals `truth`; None without items."""
    if len(predicted) != len(truth):
        raise ValueError(f"label sequences differ in length ({len(predicted)} and {len(truth)})")
    return sum(p == t for p, t in zip(predicted, truth)) / len(truth) if truth else None
