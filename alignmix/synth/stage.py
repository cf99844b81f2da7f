"""The synth stage's wiring: offline or LLM-server synthetic sets, with what enters its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.code_version import code_of
from alignmix.outputs import Documents
from alignmix.recipe import Recipe, SynthSet, key_settings
from alignmix.run import Stage, StageContext
from alignmix.scenarios import Scenario, training_split
from alignmix.scenarios.recipe_sets import (
    held_out_identity,
    held_out_items,
    recipe_scenarios,
    scenario_files_identity,
)


def synth_stage(recipe: Recipe, base_dir: Path) -> Stage | None:
    if not recipe.synth.sets:
        return None

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.jsonl import write_jsonl_gz
        from alignmix.synth.offline import generate_synthetic

        stats = {}
        for synth_set in recipe.synth.sets:
            scenarios = recipe_scenarios(recipe, synth_set.scenarios, base_dir)
            grounded = training_split(scenarios)
            if synth_set.generator != "offline":
                # Answers live in the stage's cache, outside the output a changed stage key clears: a rerun
                # under new settings pays only for prompts it has not seen.
                responses = ctx.cache / synth_set.name / "responses.jsonl"
                stats[synth_set.name] = _server_synth_set(recipe, synth_set, scenarios, base_dir, ctx.output,
                                                          responses, ctx.log_file.parent)
                continue
            rows = generate_synthetic(
                grounded, list(synth_set.surface_forms), synth_set.stance, synth_set.documents_per_scenario,
                synth_set.name, recipe.seed,
            )
            written = write_jsonl_gz(Documents(ctx.output / synth_set.name).shard(0), rows)
            stats[synth_set.name] = {
                "generator": synth_set.generator, "stance": synth_set.stance, "scenarios": len(grounded),
                "held_out_scenarios_excluded": len(scenarios) - len(grounded), "documents": written,
            }
        Documents(ctx.output).write_stats(stats)
        return stats

    settings = {
        "seed": recipe.seed,
        "sets": [key_settings(s, "synth") for s in recipe.synth.sets],
        "scenario_files": {s.scenarios: scenario_files_identity(s.scenarios, base_dir) for s in recipe.synth.sets},
    }
    if any(s.generator != "offline" for s in recipe.synth.sets):  # server sets are decontaminated against these
        settings.update(held_out_identity(recipe, held_out_items(recipe, base_dir)))
    return Stage("synth", Path("synth"), settings, action, code=code_of("synth"), kind="synth")


def _server_synth_set(
    recipe: Recipe, synth_set: SynthSet, scenarios: list[Scenario], base_dir: Path, output: Path, responses: Path,
    logs: Path,
) -> dict[str, Any]:
    """A synthetic set from an LLM server into OUT/NAME, resumable: a request whose answer in `responses` has the
    same prompt hash, model and sampling is not asked again. Without a `base_url`, a vLLM server is started on
    the set's model for the set (its log: LOGS/vllm-NAME.log) and stopped afterwards."""
    server = synth_set.server
    assert server is not None
    if server.base_url is not None:
        return _synth_through(recipe, synth_set, scenarios, base_dir, output, responses, server.base_url)
    from alignmix.llm.backend import BackendError
    from alignmix.llm.server import serve_model

    local = Path(server.model) if Path(server.model).is_absolute() else base_dir / server.model
    spec = local if local.exists() else server.model  # a folder beside the recipe, or builtin:NAME
    try:
        with serve_model(spec, server.model, logs / f"vllm-{synth_set.name}.log") as started:
            return _synth_through(recipe, synth_set, scenarios, base_dir, output, responses, started.base_url)
    except BackendError as exc:
        raise RuntimeError(f"synth set '{synth_set.name}': {exc}") from None


def _synth_through(
    recipe: Recipe, synth_set: SynthSet, scenarios: list[Scenario], base_dir: Path, output: Path, responses: Path,
    base_url: str,
) -> dict[str, Any]:
    from alignmix.llm.backend import BackendError, Sampling, open_backend
    from alignmix.synth.documents import DocumentSpec, HeldOutGroundingError, generate_set, plan_documents
    from alignmix.synth.postprocess import Bounds
    from alignmix.synth.prompts import DocumentTemplates

    server = synth_set.server
    assert server is not None
    spec = DocumentSpec(
        name=synth_set.name, surface_forms=tuple(synth_set.surface_forms), stances=(synth_set.stance,),
        per_combination=synth_set.documents_per_scenario // len(synth_set.surface_forms),
        sampling=Sampling(server.max_tokens, server.temperature, 1.0, recipe.seed),
        bounds=Bounds(server.min_words, server.max_words), ngram=recipe.decontamination.ngram,
    )
    try:
        plan = plan_documents(scenarios, spec, DocumentTemplates.load(), synth_set.generator, server.model,
                              held_out_extra=held_out_items(recipe, base_dir))
    except HeldOutGroundingError as exc:
        raise RuntimeError(f"synth set '{synth_set.name}': {exc}") from None
    try:
        client = open_backend(synth_set.generator, server.model, base_url, server.api_key_env, server.timeout,
                              server.max_retries, server.concurrency)
        job, stats = generate_set(plan, spec, client, output / synth_set.name, responses, server.concurrency,
                                  f"synth/{synth_set.name}")
    except BackendError as exc:
        raise RuntimeError(f"synth set '{synth_set.name}': {exc}") from None
    if job.failed:
        raise RuntimeError(f"synth set '{synth_set.name}': {job.failed} request(s) failed after their retries"
                           f" (first: {job.failures[0]}); rerun to send only those")
    return {"generator": synth_set.generator, "stance": synth_set.stance, "scenarios": len(plan.grounded),
            "held_out_scenarios_excluded": len(scenarios) - len(plan.grounded), "documents": stats["kept"],
            "requests": stats["requests"], "dropped": stats["dropped"], "tokens": stats["tokens"]}
