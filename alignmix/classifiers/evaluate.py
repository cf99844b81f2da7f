"""Precision, recall, F1 and flag rate of a classifier on labelled rows, overall and per group."""

from __future__ import annotations


def metrics(rows: list[dict], predictions: list[bool]) -> dict:
    """Overall precision / recall / F1 / flag rate, plus the flag rate (share flagged) within each group."""
    true_positive = sum(p and r["label"] == 1 for r, p in zip(rows, predictions))
    flagged = sum(predictions)
    positives = sum(r["label"] == 1 for r in rows)
    precision = true_positive / flagged if flagged else 0.0
    recall = true_positive / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    groups: dict[str, list[bool]] = {}
    for row, prediction in zip(rows, predictions):
        groups.setdefault(row.get("group", "all"), []).append(prediction)
    return {
        "precision": precision, "recall": recall, "f1": f1, "flag_rate": flagged / len(rows), "n": len(rows),
        "flag_rate_by_group": {g: sum(v) / len(v) for g, v in sorted(groups.items())},
        "n_by_group": {g: len(v) for g, v in sorted(groups.items())},
    }
