"""`alignmix classifiers`: labelled sets, classifier training and evaluation, LLM labelling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignmix.cli.common import (
    console,
    fail,
    recipe_default,
    recipe_range,
)
from alignmix.recipe import ClassifierSpec


def classifiers_build_labels(
    data: Annotated[Path, typer.Option("--data", help="Folder laid out as ../shared/data.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl and test.jsonl.")],
    questions_per_file: Annotated[int, typer.Option(help="AI-risk eval questions sampled per behaviour file.")] = 30,
) -> None:
    """Write a labelled set (AI discourse vs ordinary web text) from real files, split 80/20."""
    from alignmix.classifiers.labels import build_labelled_set

    try:
        counts = build_labelled_set(data, out, questions_per_file)
    except FileNotFoundError as exc:
        fail(str(exc))
    for key, value in counts.items():
        console.print(f"{key}: {value}", highlight=False)


def classifiers_train(
    labels: Annotated[Path, typer.Option("--labels", help="Labelled jsonl: text, label (1 = AI discourse).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the trained classifier.")],
    kind: Annotated[
        Literal["fasttext", "embedding"], typer.Option("--kind", help="fasttext, or embedding (MiniLM + linear head).")
    ] = "fasttext",
    target: Annotated[
        Literal["discourse", "stance"],
        typer.Option("--target", help="discourse (label 0/1), or stance (aligned/misaligned/neutral, fastText)."),
    ] = "discourse",
    seed: int = 0,
) -> None:
    """Train a model classifier from labelled jsonl."""
    from alignmix.classifiers.labels import read_labels
    from alignmix.classifiers.models import train_classifier, train_stance_classifier

    try:
        rows = read_labels(labels)
        if target == "stance":
            train_stance_classifier(rows, out, seed)
        else:
            train_classifier(rows, kind, out, seed)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        fail(str(exc))
    console.print(f"{target} classifier ({kind if target == 'discourse' else 'fasttext'}) trained on {len(rows):,} rows: {out}")


def classifiers_evaluate(
    labels: Annotated[Path, typer.Option("--labels", help="Labelled jsonl: text, label, group.")],
    model: Annotated[
        list[Path] | None, typer.Option("--model", help="A trained classifier folder (repeatable).")
    ] = None,
    threshold: Annotated[float, typer.Option(
        **recipe_range(ClassifierSpec, "threshold"), help="Score at or above which a model flags.",
    )] = recipe_default(ClassifierSpec, "threshold"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
) -> None:
    """Precision, recall, F1 and flag rate of the blocklist, each model, and blocklist -> model."""
    from alignmix.classifiers.blocklist import Blocklist
    from alignmix.classifiers.evaluate import metrics
    from alignmix.classifiers.labels import read_labels
    from alignmix.classifiers.models import load_classifier

    try:
        rows = read_labels(labels)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    texts = [r["text"] for r in rows]
    blocklist = Blocklist.from_lists()
    predictions = {"blocklist": [blocklist.tag(text).flagged for text in texts]}
    for folder in model or []:
        model_flags = [score >= threshold for score in load_classifier(folder).score(texts)]
        predictions[folder.name] = model_flags
        predictions[f"blocklist->{folder.name}"] = [b and m for b, m in zip(predictions["blocklist"], model_flags)]
    results = {name: metrics(rows, flags) for name, flags in predictions.items()}
    table = Table(title=f"{labels} ({len(rows):,} rows)")
    groups = list(next(iter(results.values()))["flag_rate_by_group"])
    for column in ["classifier", "precision", "recall", "F1", "flag rate", *[f"flag rate: {g}" for g in groups]]:
        table.add_column(column, justify="left" if column == "classifier" else "right")
    for name, m in results.items():
        table.add_row(escape(name), *(f"{m[k]:.3f}" for k in ("precision", "recall", "f1", "flag_rate")),
                      *(f"{m['flag_rate_by_group'][g]:.3f}" for g in groups))
    Console(width=max(console.width, 140)).print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2))


def classifiers_label(
    input_file: Annotated[Path, typer.Argument(help="Documents to label, jsonl.")],
    server: Annotated[str, typer.Option("--server", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000.")],
    model: Annotated[str, typer.Option("--model", help="Model name the server serves.")],
    out: Annotated[Path, typer.Option("--out", help="Labelled jsonl (text, label, stance) for `train`.")],
    text_key: Annotated[str, typer.Option("--text-key")] = "text",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 16,
) -> None:
    """Label documents with an LLM judge (AI discourse and stance), as training labels for a classifier."""
    from alignmix.classifiers.llm_judge import label_documents
    from alignmix.jsonl import JsonLinesError, iter_json_lines, write_jsonl
    from alignmix.llm import BackendError, open_backend

    rows = []
    try:
        for number, row in iter_json_lines(input_file):
            if not isinstance(row, dict) or not isinstance(row.get(text_key), str):
                fail(f"{input_file}:{number}: expected an object with a '{text_key}' string")
            rows.append(row)
    except (OSError, JsonLinesError) as exc:
        fail(str(exc))
    try:
        labelled, unparseable = label_documents(rows, open_backend("vllm", model, base_url=server), text_key, concurrency)
    except BackendError as exc:
        fail(str(exc))
    write_jsonl(out, labelled)
    console.print(f"{len(labelled):,} labelled, {unparseable:,} unparseable replies skipped: {out}")


def register(app: typer.Typer) -> None:
    """Add `classifiers build-labels | train | evaluate | label` to the `alignmix` app."""
    classifiers_app = typer.Typer(help="Build labelled sets, train and evaluate AI-discourse classifiers.",
                                  no_args_is_help=True)
    classifiers_app.command("build-labels")(classifiers_build_labels)
    classifiers_app.command("train")(classifiers_train)
    classifiers_app.command("evaluate")(classifiers_evaluate)
    classifiers_app.command("label")(classifiers_label)
    app.add_typer(classifiers_app, name="classifiers")
