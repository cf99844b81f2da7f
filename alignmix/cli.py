"""The `alignmix` command: run a recipe end to end, or plan it without touching data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignmix.cli_common import (
    RecipeArg,
    console,
    fail,
    load_recipe_or_fail,
    report_error,
    run_recipe,
)
from alignmix.cli_eval import register as register_eval_commands
from alignmix.cli_synth import synth_app
from alignmix.cli_train import register as register_train_commands
from alignmix.errors import AlignmixError

app = typer.Typer(
    help="alignmix: measure, control and train on AI discourse in pretraining data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.command()
def run(
    recipe_file: RecipeArg,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/RECIPE_NAME).")
    ] = None,
) -> None:
    """Run every stage of a recipe into a run folder; unchanged stages are skipped, interrupted ones resume."""
    recipe = load_recipe_or_fail(recipe_file)
    run_dir = out or Path("runs") / recipe.name
    manifest = run_recipe(recipe, recipe_file, run_dir)
    ran = sum(s["status"] != "skipped" for s in manifest["stages"])
    console.print(f"run folder: {run_dir}  ({ran} stage(s) ran, {len(manifest['stages']) - ran} skipped)")
    for stage in manifest["stages"]:
        if stage["name"].startswith("eval/"):
            rate = json.loads((run_dir / stage["output"] / "results.json").read_text())["misalignment_rate"]
            console.print(f"misalignment rate, {stage['name'][5:]}: {rate['mean']:.3f} ± {rate['se']:.3f}"
                          " (mean ± SE over 8 formats)")
    console.print(f"report: {run_dir / 'report.html'}")


@app.command()
def plan(
    recipe_file: RecipeArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the token plan as JSON.")] = False,
) -> None:
    """Print the stage graph and each training stage's token plan, without reading or writing data."""
    recipe = load_recipe_or_fail(recipe_file)
    from alignmix.corpus.plan import assumed_available, plan_stage
    from alignmix.graph import build_graph

    try:
        plans = [plan_stage(stage, assumed_available(recipe, stage)) for stage in recipe.stages]
        graph = build_graph(recipe, recipe_file.parent)
    except AlignmixError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"stages": [p.as_dict() for p in plans]}, indent=2))
        return
    console.print(f"recipe [bold]{recipe.name}[/] (seed {recipe.seed})")
    console.print("stage graph:")
    for stage in graph:
        after = f"  <- {', '.join(stage.depends_on)}" if stage.depends_on else ""
        console.print(f"  {stage.name}{after}", highlight=False)
    for p in plans:
        table = Table(title=f"{p.name}: {p.tokens:,} tokens at context {p.seq_len:,}")
        for column in ("source", "selection", "tokens", "share", "repetitions"):
            table.add_column(column, justify="left" if column in ("source", "selection") else "right",
                             overflow="fold")
        for s in p.sources:
            reps = "unknown until tagged" if s.repetitions is None else f"{s.repetitions:.2f}"
            if s.tokens is None:  # a `share: natural` entry before its available tokens are known
                table.add_row(escape(s.source), escape(s.selection), "natural", "by available tokens",
                              "known after tagging")
            else:
                table.add_row(escape(s.source), escape(s.selection), f"{s.tokens:,}", f"{100 * s.share:.2f}%", reps)
        console.print(table)


@app.command()
def stats(
    folders: Annotated[list[Path], typer.Argument(help="Run folders, tag outputs or mixture folders.")],
    report: Annotated[Path, typer.Option("--report", help="Where to write the HTML page.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the statistics as JSON.")] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="Tokenizer folder for token counts (default: FOLDER/tokenizer if present)."),
    ] = None,
) -> None:
    """Corpus statistics over tagged shards and mixture manifests: prevalence, terms, stance, lengths, mixtures."""
    from alignmix.report.corpus_stats import collect
    from alignmix.report.html import render_stats_page

    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        fail(f"not a folder: {', '.join(missing)}")
    if tokenizer is None:
        tokenizer = next((f / "tokenizer" for f in folders if (f / "tokenizer" / "tokenizer.json").is_file()), None)
    try:
        statistics = collect(folders, tokenizer)
    except FileNotFoundError as exc:
        fail(str(exc))
    render_stats_page(statistics, report)
    if json_out is not None:
        json_out.write_text(json.dumps(statistics, indent=2))
    for name, source in statistics["sources"].items():
        console.print(
            f"{name}: {source['documents']:,} documents, {source['flagged']:,} flagged ({100 * source['flag_rate']:.2f}%)",
            highlight=False,
        )
    console.print(f"report: {report}" + (f"  json: {json_out}" if json_out else ""))


@app.command()
def tag(
    inputs: Annotated[list[Path], typer.Argument(help="Files or folders: jsonl(.gz/.zst), parquet, warc(.gz).")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the tagged jsonl.gz shards and stats.json.")],
    tasks: Annotated[int, typer.Option("--tasks", min=1, help="Parallel tasks (a task reads whole files).")] = 1,
    executor: Annotated[
        str, typer.Option("--executor", help="local, or ray (a cluster at RAY_ADDRESS, else a local one).")
    ] = "local",
    on_error: Annotated[
        str, typer.Option("--on-error", help="fail: stop at the first bad line, naming it; skip: count and skip.")
    ] = "fail",
    text_key: Annotated[str, typer.Option("--text-key", help="Field holding the text (jsonl, parquet).")] = "text",
    id_key: Annotated[str, typer.Option("--id-key", help="Field holding the document id.")] = "id",
    source: Annotated[str, typer.Option("--source", help="Name written to metadata.source.")] = "corpus",
    lists_dir: Annotated[
        Path | None, typer.Option("--lists-dir", help="Folder of term lists (default: the shipped ones).")
    ] = None,
    max_document_bytes: Annotated[
        int, typer.Option("--max-document-bytes", help="Longer jsonl lines are errors or skips (too_large).")
    ] = 10_000_000,
    classifier: Annotated[
        Path | None, typer.Option("--classifier", help="A trained classifier that must confirm blocklist flags.")
    ] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="The classifier's flagging threshold.")] = 0.5,
    stance_classifier: Annotated[
        Path | None, typer.Option("--stance-classifier", help="A trained stance classifier for flagged documents.")
    ] = None,
) -> None:
    """Tag documents with the AI-discourse blocklist: every document gains metadata.ai_discourse."""
    from alignmix.corpus.readers import InputError
    from alignmix.corpus.tag import (
        SUFFIXES,
        describe_inputs,
        detect_format,
        input_files,
        reset_if_inputs_changed,
        tag_files,
        write_stats,
    )
    from alignmix.stderr import stderr_to

    if executor not in ("local", "ray"):
        fail(f"--executor must be local or ray, got {executor!r}")
    if on_error not in ("fail", "skip"):
        fail(f"--on-error must be fail or skip, got {on_error!r}")
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        fail(f"input not found: {', '.join(missing)}")
    every_suffix = tuple(s for suffixes in SUFFIXES.values() for s in suffixes)
    groups: dict[str, list[Path]] = {}
    try:
        for file in input_files(inputs, every_suffix):
            groups.setdefault(detect_format(file), []).append(file)
    except ValueError as exc:
        fail(str(exc))
    if not groups:
        fail(f"no input files ending in {', '.join(every_suffix)} under {', '.join(map(str, inputs))}")
    settings = {
        "source": source, "text_key": text_key, "id_key": id_key, "lists_dir": lists_dir, "tasks": tasks,
        "executor": executor, "on_error": on_error, "max_document_bytes": max_document_bytes,
        "classifier": classifier, "threshold": threshold, "stance_classifier": stance_classifier,
    }
    if reset_if_inputs_changed(output, describe_inputs([f for files in groups.values() for f in files], settings)):
        console.print(f"{output} held a tag run of other inputs or settings: cleared, tagging anew", highlight=False)
    log_file = output / "logs" / "datatrove.log"
    console.print(f"tagging {sum(map(len, groups.values())):,} files with {tasks} task(s); log: {log_file}",
                  highlight=False)
    counters = []
    try:
        for file_format, files in groups.items():
            with stderr_to(log_file):
                counters.append(tag_files(
                    files, output, shards_dir=output, file_format=file_format, text_key=text_key, id_key=id_key,
                    source_name=source, lists_dir=lists_dir, tasks=tasks, executor=executor, on_error=on_error,
                    max_document_bytes=max_document_bytes, shard_prefix=f"{file_format}-" if len(groups) > 1 else "",
                    classifier_dir=classifier, threshold=threshold, stance_dir=stance_classifier,
                ))
    except (InputError, RuntimeError) as exc:
        fail(f"{exc}\n(no stats.json: the shards in {output} are incomplete; fix the input and rerun, finished"
             f" tasks are kept; log: {log_file})")
    stats = write_stats(output, counters)
    console.print(
        f"{stats['documents_in']:,} documents in: {stats['documents_kept']:,} kept, {stats['documents_flagged']:,}"
        f" flagged ({100 * stats['flag_rate']:.2f}%), {stats['documents_skipped']:,} skipped"
        f" {stats['skipped_by_reason'] or ''}",
        highlight=False,
    )
    console.print(f"shards and stats.json in {output}")


classifiers_app = typer.Typer(help="Build labelled sets, train and evaluate AI-discourse classifiers.", no_args_is_help=True)
app.add_typer(classifiers_app, name="classifiers")
app.add_typer(synth_app, name="synth")


@classifiers_app.command("build-labels")
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


@classifiers_app.command("train")
def classifiers_train(
    labels: Annotated[Path, typer.Option("--labels", help="Labelled jsonl: text, label (1 = AI discourse).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the trained classifier.")],
    kind: Annotated[str, typer.Option("--kind", help="fasttext, or embedding (MiniLM + linear head).")] = "fasttext",
    target: Annotated[
        str, typer.Option("--target", help="discourse (label 0/1), or stance (aligned/misaligned/neutral, fastText).")
    ] = "discourse",
    seed: int = 0,
) -> None:
    """Train a model classifier from labelled jsonl."""
    from alignmix.classifiers.labels import read_labels
    from alignmix.classifiers.models import train_classifier, train_stance_classifier

    if kind not in ("fasttext", "embedding") or target not in ("discourse", "stance"):
        fail(f"--kind must be fasttext or embedding and --target discourse or stance, got {kind!r}, {target!r}")
    try:
        rows = read_labels(labels)
        if target == "stance":
            train_stance_classifier(rows, out, seed)
        else:
            train_classifier(rows, kind, out, seed)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        fail(str(exc))
    console.print(f"{target} classifier ({kind if target == 'discourse' else 'fasttext'}) trained on {len(rows):,} rows: {out}")


@classifiers_app.command("evaluate")
def classifiers_evaluate(
    labels: Annotated[Path, typer.Option("--labels", help="Labelled jsonl: text, label, group.")],
    model: Annotated[
        list[Path] | None, typer.Option("--model", help="A trained classifier folder (repeatable).")
    ] = None,
    threshold: Annotated[float, typer.Option(help="Score at or above which a model flags.")] = 0.5,
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


@classifiers_app.command("label")
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


register_eval_commands(app)
register_train_commands(app)


def main() -> None:
    """The `alignmix` command: an alignmix error raised anywhere below a command is one `error:` line, status 2."""
    try:
        app(prog_name="alignmix")
    except AlignmixError as exc:
        report_error(str(exc))
        raise SystemExit(2) from None
