"""`alignmix synth`: synthetic documents and scenario questions through an LLM backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from alignmix.cli.common import comma_list, console, errors, fail, hold_output, recipe_default, recipe_range
from alignmix.llm.backend import BackendError, BackendKind, ChatBackend, Sampling, open_backend, run_async
from alignmix.recipe import DEDUP_THRESHOLD, Decontamination, SynthServer
from alignmix.scenarios import AssignedSplit, MisalignedAnswer

BackendOpt = Annotated[BackendKind, typer.Option("--backend", help="openai | vllm (OpenAI-compatible HTTP) | transformers (local HF folder, CPU).")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="Server URL, e.g. http://127.0.0.1:8000/v1 (default by backend).")]
ModelOpt = Annotated[str, typer.Option("--model", help="Model name the server serves, or an HF folder for transformers.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight.")]
ApiKeyEnvOpt = Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the API key (never written).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds the server may stay silent (answers are streamed, so a long one does not time out).")]
RetriesOpt = Annotated[int, typer.Option("--max-retries", min=0, help="Retries on 429, 5xx, timeouts and connection errors.")]


def _backend(
    kind: BackendKind, model: str, base_url: str | None, api_key_env: str, timeout: float, retries: int, concurrency: int
) -> ChatBackend:
    try:
        return open_backend(kind, model, base_url, api_key_env, timeout, retries, connections=max(concurrency, 1))
    except BackendError as exc:
        fail(str(exc))


def documents(
    ctx: typer.Context,
    questions: Annotated[str, typer.Option("--questions", help="builtin:NAME or a scenario file or folder (alignmix, paper or Anthropic format).")],
    model: ModelOpt,
    output: Annotated[Path, typer.Option("--output", help="Output folder: data/*.jsonl.gz, stats.json, responses.jsonl.")],
    backend: BackendOpt = "openai",
    base_url: BaseUrlOpt = None,
    per_combination: Annotated[int, typer.Option("--per-combination", min=1, help="Documents per scenario x stance x surface form.")] = 1,
    surface_forms: Annotated[str | None, typer.Option("--surface-forms", help="Comma-separated keys (default: all in the templates).")] = None,
    stances: Annotated[str, typer.Option("--stances", help="aligned, misaligned or both, comma-separated.")] = "aligned,misaligned",
    concurrency: ConcurrencyOpt = recipe_default(SynthServer, "concurrency"),
    misaligned_answer: Annotated[MisalignedAnswer | None, typer.Option("--misaligned-answer", help="matching | not_matching, for Anthropic files alignmix does not know.")] = None,
    ids: Annotated[str | None, typer.Option("--ids", help="Only these scenario ids (comma-separated); held-out ids are an error.")] = None,
    decontaminate: Annotated[list[Path] | None, typer.Option("--decontaminate", help="Further eval questions whose held-out split documents must not overlap (repeatable).")] = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="A folder of your own prompt templates (same file names).")] = None,
    name: Annotated[str, typer.Option("--name", help="Source name in the documents' metadata.")] = "synthetic",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = recipe_default(SynthServer, "max_tokens"),
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = recipe_default(SynthServer, "temperature"),
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Base seed; each request gets its own, derived from its id.")] = 0,
    min_words: Annotated[int, typer.Option("--min-words", min=1)] = recipe_default(SynthServer, "min_words"),
    max_words: Annotated[int, typer.Option("--max-words", min=1)] = recipe_default(SynthServer, "max_words"),
    dedup_threshold: Annotated[float, typer.Option("--dedup-threshold", min=0.0, max=1.0, help="MinHash Jaccard threshold.")] = DEDUP_THRESHOLD,
    ngram: Annotated[int, typer.Option("--ngram", **recipe_range(Decontamination, "ngram"), help="Decontamination word n-gram length.")] = recipe_default(Decontamination, "ngram"),
    api_key_env: ApiKeyEnvOpt = recipe_default(SynthServer, "api_key_env"),
    timeout: TimeoutOpt = recipe_default(SynthServer, "timeout"),
    max_retries: RetriesOpt = recipe_default(SynthServer, "max_retries"),
    export_batch: Annotated[bool, typer.Option("--export-batch", help="Write OpenAI Batch API request files to OUT/batch/ and stop.")] = False,
    batch_results: Annotated[list[Path] | None, typer.Option("--batch-results", help="Import Batch API result files instead of calling a server (repeatable).")] = None,
) -> None:
    """Documents grounded in training-split scenarios x surface forms x stances x K, filtered and deduplicated.

    Rerun the same command after a crash: answered requests are skipped.
    """
    from alignmix.llm.batch import export_batch as write_batch
    from alignmix.llm.batch import import_batch_results
    from alignmix.llm.jobs import fresh_answers
    from alignmix.scenarios import ScenarioError, load_scenarios
    from alignmix.synth.documents import (
        RESPONSES,
        DocumentSpec,
        HeldOutGroundingError,
        finalize,
        generate_set,
        plan_documents,
    )
    from alignmix.synth.postprocess import Bounds
    from alignmix.synth.prompts import STANCES, DocumentTemplates, TemplateError

    chosen_stances = comma_list(stances)
    if not chosen_stances or any(s not in STANCES for s in chosen_stances):
        fail(f"--stances takes aligned and/or misaligned, not '{stances}'")
    try:
        loaded = DocumentTemplates.load(templates)
        scenarios = load_scenarios(questions, None, misaligned_answer, [])
        extra = [s for f in decontaminate or [] for s in load_scenarios(str(f), None, misaligned_answer, []) if not s.in_training_split]
        spec = DocumentSpec(
            name=name, surface_forms=tuple(comma_list(surface_forms) if surface_forms else loaded.surface_forms),
            stances=tuple(chosen_stances), per_combination=per_combination,
            sampling=Sampling(max_tokens, temperature, top_p, seed), bounds=Bounds(min_words, max_words),
            ngram=ngram, dedup_threshold=dedup_threshold,
        )
        plan = plan_documents(scenarios, spec, loaded, backend, model, comma_list(ids) if ids else None, extra)
    except (ScenarioError, TemplateError, HeldOutGroundingError, OSError) as exc:
        fail(str(exc))
    hold_output(ctx, output, "--output")
    output.mkdir(parents=True, exist_ok=True)
    console.print(f"{len(plan.requests):,} requests: {len(plan.grounded)} training-split scenarios x "
                  f"{len(spec.stances)} stance(s) x {len(spec.surface_forms)} surface form(s) x {per_combination}")
    failed = 0
    try:
        if export_batch:
            answered = set(fresh_answers(plan.requests, output / RESPONSES, model))
            paths = write_batch(plan.requests, output / "batch", model, answered)
            console.print(f"{len(paths)} batch request file(s) in {output / 'batch'}; upload them to the Batch API, then "
                          "rerun this command with --batch-results FILE for each result file")
            return
        if batch_results:
            imported = import_batch_results(batch_results, output / RESPONSES, plan.requests, model)
            console.print(f"imported {imported.imported:,} results ({imported.already_present:,} already present, "
                          f"errors: {imported.errors or 'none'})")
            stats = finalize(plan, spec, output, output / RESPONSES)
        else:
            client = _backend(backend, model, base_url, api_key_env, timeout, max_retries, concurrency)
            job, stats = generate_set(plan, spec, client, output, output / RESPONSES, concurrency, f"synth/{name}")
            failed = job.failed
            console.print(f"answered {job.answered:,}, already answered {job.already_done:,}, failed {job.failed:,}, "
                          f"stale {job.stale:,} (answered before for another model, prompt or sampling: asked again)")
            for failure in job.failures[:3]:
                errors.print(f"  {failure}", highlight=False, markup=False)
    except BackendError as exc:
        fail(str(exc))
    console.print(f"kept {stats['kept']:,} of {stats['requests']:,}; dropped {stats['dropped'] or 'none'}: {output}")
    if failed:
        fail(f"{failed:,} request(s) failed after their retries; rerun the same command to retry only those")


def questions_command(
    passages: Annotated[Path, typer.Option("--passages", help="A folder of .md / .txt source text.")],
    model: ModelOpt,
    output: Annotated[Path, typer.Option("--output", help="Scenario questions, alignmix jsonl.")],
    backend: BackendOpt = "openai",
    base_url: BaseUrlOpt = None,
    per_passage: Annotated[int, typer.Option("--per-passage", min=1)] = 1,
    max_passages: Annotated[int | None, typer.Option("--max-passages", min=1)] = None,
    passage_words: Annotated[int, typer.Option("--passage-words", min=20, help="Words per source passage, at most.")] = 400,
    split: Annotated[AssignedSplit | None, typer.Option("--split", help="train | heldout for every question (default: by id hash, ~20% held out).")] = None,
    concurrency: ConcurrencyOpt = 16,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Tries per question when the JSON is invalid.")] = 3,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 1024,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.7,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    api_key_env: ApiKeyEnvOpt = recipe_default(SynthServer, "api_key_env"),
    timeout: TimeoutOpt = recipe_default(SynthServer, "timeout"),
    max_retries: RetriesOpt = recipe_default(SynthServer, "max_retries"),
) -> None:
    """Two-option scenario questions (JSON-schema answers) grounded in source passages."""
    from alignmix.synth.questions import generate_questions, read_passages

    try:
        chosen = read_passages(passages, passage_words)[:max_passages]
    except (OSError, UnicodeDecodeError) as exc:
        fail(str(exc))
    client = _backend(backend, model, base_url, api_key_env, timeout, max_retries, concurrency)

    async def main() -> dict:
        try:
            return await generate_questions(chosen, client, output, per_passage,
                                            Sampling(max_tokens, temperature, 1.0, seed), concurrency, max_attempts, split)
        finally:
            await client.aclose()

    try:
        counts = run_async(main())
    except BackendError as exc:
        fail(str(exc))
    output.with_name(output.name + ".stats.json").write_text(json.dumps(counts, indent=2) + "\n")
    console.print(f"{counts['written']:,} questions from {counts['passages']:,} passages: {output} ({counts})")
    if counts["gave_up"]:
        fail(f"{counts['gave_up']} question(s) had no valid answer in {max_attempts} attempts; rerun with a larger --max-attempts")


def register(app: typer.Typer) -> None:
    """Add `synth documents | questions` to the `alignmix` app."""
    synth_app = typer.Typer(help="Generate synthetic documents and scenario questions with an LLM.", no_args_is_help=True)
    synth_app.command("documents")(documents)
    synth_app.command("questions")(questions_command)
    app.add_typer(synth_app, name="synth")
