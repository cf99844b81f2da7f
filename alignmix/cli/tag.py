"""`alignmix tag`: the AI-discourse tagger over jsonl, parquet and WARC files, on datatrove."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignmix.cli.common import (
    console,
    fail,
    hold_output,
    recipe_default,
    recipe_range,
)
from alignmix.corpus.engines import SlurmSettings
from alignmix.recipe import ClassifierSpec, Executor, Mixing, OnError, Tagging


def tag(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Files or folders: jsonl(.gz/.zst), parquet, warc(.gz).")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the tagged jsonl.gz shards and stats.json.")],
    tasks: Annotated[
        int, typer.Option("--tasks", min=1, help="Parallel tasks (a task reads whole files).")
    ] = recipe_default(Tagging, "tasks"),
    executor: Annotated[
        Executor, typer.Option("--executor", help="local; ray (a cluster at RAY_ADDRESS, else a local one); slurm"
                                                  " (datatrove's Slurm executor: an array job, waited for).")
    ] = "local",
    partition: Annotated[
        str, typer.Option("--partition", help="With --executor slurm: the partition.")
    ] = recipe_default(Mixing, "partition"),
    time_limit: Annotated[
        str, typer.Option("--time", help="With --executor slurm: each task's time limit.")
    ] = recipe_default(Mixing, "time"),
    on_error: Annotated[
        OnError, typer.Option("--on-error", help="fail: stop at the first bad line, naming it; skip: count and skip.")
    ] = recipe_default(Tagging, "on_error"),
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
    threshold: Annotated[float, typer.Option(
        "--threshold", **recipe_range(ClassifierSpec, "threshold"), help="The classifier's flagging threshold."
    )] = recipe_default(ClassifierSpec, "threshold"),
    stance_classifier: Annotated[
        Path | None, typer.Option("--stance-classifier", help="A trained stance classifier for flagged documents.")
    ] = None,
) -> None:
    """Tag documents with the AI-discourse blocklist: every document gains metadata.ai_discourse."""
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        fail(f"input not found: {', '.join(missing)}")
    hold_output(ctx, output, "--output")
    try:
        _tag(inputs, output, {
            "source": source, "text_key": text_key, "id_key": id_key, "lists_dir": lists_dir, "tasks": tasks,
            "executor": executor, "on_error": on_error, "max_document_bytes": max_document_bytes,
            "classifier": classifier, "threshold": threshold, "stance_classifier": stance_classifier,
        }, SlurmSettings(partition=partition, time=time_limit))
    except OSError as exc:  # a full disk, most often: datatrove's writer raises it from deep in a task
        fail(f"{exc.filename or output}: {exc.strerror or exc} while tagging into {output} (free space or fix the"
             f" folder and rerun; finished tasks are kept; log: {output / 'logs' / 'datatrove.log'})")


def _tag(inputs: list[Path], output: Path, settings: dict, slurm: SlurmSettings) -> None:
    """Tag `inputs` into `output` (held by this process) with the command's `settings`."""
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

    every_suffix = tuple(s for suffixes in SUFFIXES.values() for s in suffixes)
    found = input_files(inputs, every_suffix, output)
    if found.notes():
        console.print(found.notes(), highlight=False)
    groups: dict[str, list[Path]] = {}
    try:
        for file in found.files:
            groups.setdefault(detect_format(file), []).append(file)
    except ValueError as exc:
        fail(str(exc))
    if not groups:
        fail(f"no input files ending in {', '.join(every_suffix)} under {', '.join(map(str, inputs))}"
             + (f" ({found.notes()})" if found.notes() else ""))
    from alignmix.classifiers.models import load_classifier, load_stance_classifier

    if settings["classifier"] is not None:  # a damaged model is named here, not in a tagging worker
        load_classifier(settings["classifier"])
    if settings["stance_classifier"] is not None:
        load_stance_classifier(settings["stance_classifier"])
    if reset_if_inputs_changed(output, describe_inputs(found.files, settings)):
        console.print(f"{output} held a tag run of other inputs or settings: cleared, tagging anew", highlight=False)
    log_file = output / "logs" / "datatrove.log"
    console.print(f"tagging {len(found.files):,} files with {settings['tasks']} task(s); log: {log_file}",
                  highlight=False)
    counters = []
    try:
        for file_format, files in groups.items():
            with stderr_to(log_file):
                counters.append(tag_files(
                    files, output, shards_dir=output, file_format=file_format, text_key=settings["text_key"],
                    id_key=settings["id_key"], source_name=settings["source"], lists_dir=settings["lists_dir"],
                    tasks=settings["tasks"], executor=settings["executor"], on_error=settings["on_error"],
                    max_document_bytes=settings["max_document_bytes"],
                    shard_prefix=f"{file_format}-" if len(groups) > 1 else "", classifier_dir=settings["classifier"],
                    threshold=settings["threshold"], stance_dir=settings["stance_classifier"], slurm=slurm,
                ))
    except (InputError, RuntimeError) as exc:
        fail(f"{exc}\n(no stats.json: the shards in {output} are incomplete; fix the input and rerun, finished"
             f" tasks are kept; log: {log_file})")
    stats = write_stats(output, counters)
    console.print(
        f"{stats['documents_in']:,} documents in: {stats['documents_kept']:,} kept, {stats['documents_flagged']:,}"
        f" flagged ({100 * stats['flag_rate']:.2f}% of the {stats['documents_tagged']:,} tagged),"
        f" {stats['documents_skipped']:,} skipped"
        f"{' ' + str(stats['skipped_by_reason']) if stats['skipped_by_reason'] else ''}"
        + (f"; {stats['ids_assigned']:,} missing, null or empty ids given the document's place (FILE/INDEX)"
           if stats["ids_assigned"] else ""),
        highlight=False,
    )
    console.print(f"shards and stats.json in {output}")


def register(app: typer.Typer) -> None:
    """Add `tag` to the `alignmix` app."""
    app.command("tag")(tag)
