"""The stage graph of a recipe: which stages run, in what order, on which files, with which settings.

corpus (generated sources) -> tag -> synth -> tokenizer -> mix/<stage> -> <training stage>... -> eval -> report,
with `base` (a released model converted once) before the tokenizer and the first training stage.
Stages pass files only; this module knows the run folder's layout and nothing of the stages' internals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignmix.classifiers.blocklist import shipped_lists_dir
from alignmix.hashing import file_sha256, strings_sha256
from alignmix.recipe import ModelSpec, Recipe, RecipeError, SynthSet, TrainingStage
from alignmix.run import Stage, StageContext
from alignmix.scenarios import (
    DIRECTIONS_FILE,
    Scenario,
    load_scenarios,
    resolve_spec,
    scenario_files,
    training_split,
)
from alignmix.train.launch import LOCAL, Launch

TRANSPORT_SETTINGS = {"concurrency", "timeout", "max_retries", "api_key_env"}  # out of the synth stage's key
_SHARED_CODE = ("alignmix.graph", "alignmix.hashing", "alignmix.jsonl", "alignmix.recipe", "alignmix.errors")
_SCENARIOS = ("alignmix.scenarios", "alignmix.scenarios_data")
STAGE_CODE: dict[str, tuple[str, ...]] = {  # each stage's package and the base packages it imports
    "corpus": ("alignmix.corpus",),
    "tag": ("alignmix.corpus", "alignmix.classifiers", "alignmix.llm", *_SCENARIOS),
    "synth": ("alignmix.synth", "alignmix.llm", *_SCENARIOS),
    "base": ("alignmix.checkpoints",),
    "tokenizer": ("alignmix.corpus", "alignmix.checkpoints"),
    "mix": ("alignmix.corpus", "alignmix.checkpoints", *_SCENARIOS),
    "train": ("alignmix.train", "alignmix.checkpoints", "alignmix.llm", *_SCENARIOS),
    "post_train": ("alignmix.train", "alignmix.checkpoints", "alignmix.llm", *_SCENARIOS),
    "eval": ("alignmix.eval", "alignmix.checkpoints", "alignmix.llm", *_SCENARIOS),
    "report": ("alignmix.report",),
}


def code_of(kind: str) -> tuple[str, ...]:
    """The alignmix source a stage of this kind runs (hashed into its key): its packages and the wiring here."""
    return (*STAGE_CODE[kind], *_SHARED_CODE)


RESERVED_NAMES = {"base", "corpus", "tag", "synth", "tokenizer", "mix", "sft", "dpo", "eval", "report", "logs"}
POST_TRAINING = ("sft", "dpo")


def _file_identity(path: Path) -> list[Any]:
    """Path, size and modification time: what changes when an input file is replaced."""
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _files_identity(paths: list[Path]) -> list[list[Any]]:
    """`_file_identity` of each file, folders expanded: what a stage's key holds for its input files."""
    return [
        _file_identity(f) for p in paths
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()))
    ]


def _scenario_files(spec: str, base_dir: Path) -> list[Any]:
    """A scenario file's content hash, and that of the Anthropic directions table it may depend on."""
    return [*map(file_sha256, scenario_files(resolve_spec(spec, base_dir))), file_sha256(DIRECTIONS_FILE)]


def _scenarios(recipe: Recipe, spec: str, base_dir: Path, skipped: list[str] | None = None) -> list[Scenario]:
    """Scenario questions as the recipe reads them: its `eval.misaligned_answer`, broken items left out."""
    direction = recipe.eval.misaligned_answer if recipe.eval else None
    return load_scenarios(spec, base_dir, direction, [] if skipped is None else skipped)


def source_shards(run_dir_output: Path) -> list[Path]:
    return sorted((run_dir_output / "data").glob("*.jsonl.gz"))


def _corpus_stage(recipe: Recipe) -> Stage | None:
    generated = [s for s in recipe.corpus.sources if s.generate is not None]
    if not generated:
        return None

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.corpus.generate import write_generated_corpus

        counts = {}
        for source in generated:
            assert source.generate is not None
            write_generated_corpus(
                ctx.output / source.name, source.name, source.generate.documents,
                source.generate.misaligned_ai_share, source.generate.aligned_ai_share, recipe.seed,
                shards=recipe.tagging.tasks,
            )
            counts[source.name] = source.generate.documents
        return {"documents_written": counts}

    settings = {"seed": recipe.seed, "shards": recipe.tagging.tasks,
                "sources": [s.model_dump(mode="json") for s in generated]}
    return Stage("corpus", Path("corpus"), settings, action, code=code_of("corpus"))


def _tag_stage(recipe: Recipe, has_corpus: bool) -> Stage:
    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.corpus.tag import SUFFIXES, input_files, tag_files, write_stats

        stats = {}
        for source in recipe.corpus.sources:
            if source.generate is not None:
                files = sorted((ctx.inputs["corpus"] / source.name).glob("*.jsonl.gz"))
            else:
                files = input_files(source.paths, SUFFIXES[source.format])
            with ctx.stderr_to_log():
                counts = tag_files(
                    files, ctx.output / source.name, file_format=source.format, text_key=source.text_key,
                    id_key=source.id_key, source_name=source.name, lists_dir=recipe.tagging.blocklist.lists_dir,
                    categories=recipe.tagging.blocklist.categories, tasks=recipe.tagging.tasks,
                    on_error=recipe.tagging.on_error,
                    classifier_dir=recipe.tagging.classifier.model if recipe.tagging.classifier else None,
                    threshold=recipe.tagging.classifier.threshold if recipe.tagging.classifier else 0.5,
                    stance_dir=recipe.tagging.stance_classifier,
                )
            s = stats[source.name] = write_stats(ctx.output / source.name, [counts])
            ctx.echo(
                f"  {source.name}: {s['documents_in']:,} documents in, {s['documents_flagged']:,} flagged"
                f" ({100 * s['flag_rate']:.2f}%), {s['documents_skipped']:,} skipped {s['skipped_by_reason'] or ''}"
                f" (log: {ctx.log_file})"
            )
        return {
            name: {k: s[k] for k in ("documents_in", "documents_flagged", "documents_skipped", "flag_rate")}
            for name, s in stats.items()
        }

    models = [recipe.tagging.classifier.model] if recipe.tagging.classifier else []
    models += [recipe.tagging.stance_classifier] if recipe.tagging.stance_classifier else []
    lists = recipe.tagging.blocklist.lists_dir or shipped_lists_dir()
    settings = {"tagging": recipe.tagging.model_dump(mode="json"),
                "input_files": _files_identity([*(p for s in recipe.corpus.sources for p in s.paths), *models]),
                "term_lists": {p.name: file_sha256(p) for p in sorted(lists.glob("*.txt"))},
                "sources": [s.model_dump(mode="json", exclude={"generate"}) for s in recipe.corpus.sources]}
    return Stage("tag", Path("tag"), settings, action, ("corpus",) if has_corpus else (), code_of("tag"))


def _synth_stage(recipe: Recipe, base_dir: Path) -> Stage | None:
    if not recipe.synth.sets:
        return None

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.jsonl import write_jsonl_gz
        from alignmix.synth.offline import generate_synthetic

        stats = {}
        for synth_set in recipe.synth.sets:
            scenarios = _scenarios(recipe, synth_set.scenarios, base_dir)
            grounded = training_split(scenarios)
            if synth_set.generator != "offline":
                # Answers live beside the runner's records (the stage's output is RUN/synth), outside the output
                # a changed stage key clears: a rerun under new settings pays only for prompts it has not seen.
                responses = ctx.output.parent / ".alignmix" / "llm" / synth_set.name / "responses.jsonl"
                stats[synth_set.name] = _server_synth_set(recipe, synth_set, scenarios, base_dir, ctx.output,
                                                          responses)
                continue
            rows = generate_synthetic(
                grounded, list(synth_set.surface_forms), synth_set.stance, synth_set.documents_per_scenario,
                synth_set.name, recipe.seed,
            )
            written = write_jsonl_gz(ctx.output / synth_set.name / "data" / "00000.jsonl.gz", rows)
            stats[synth_set.name] = {
                "generator": synth_set.generator, "stance": synth_set.stance, "scenarios": len(grounded),
                "held_out_scenarios_excluded": len(scenarios) - len(grounded), "documents": written,
            }
        (ctx.output / "stats.json").write_text(json.dumps(stats, indent=2))
        return stats

    settings = {
        "seed": recipe.seed,
        "sets": [s.model_dump(mode="json", exclude={"server": TRANSPORT_SETTINGS}) for s in recipe.synth.sets],
        "scenario_files": {s.scenarios: _scenario_files(s.scenarios, base_dir) for s in recipe.synth.sets},
    }
    if any(s.generator != "offline" for s in recipe.synth.sets):  # server sets are decontaminated against these
        settings.update(_held_out_identity(recipe, held_out_items(recipe, base_dir)))
    return Stage("synth", Path("synth"), settings, action, code=code_of("synth"))


def _server_synth_set(
    recipe: Recipe, synth_set: SynthSet, scenarios: list[Scenario], base_dir: Path, output: Path, responses: Path
) -> dict[str, Any]:
    """A synthetic set from an LLM server into OUT/NAME, resumable: a request whose answer in `responses` has the
    same prompt hash, model and sampling is not asked again."""
    from alignmix.llm.backend import BackendError, Sampling, open_backend
    from alignmix.synth.documents import DocumentSpec, HeldOutGroundingError, finalize, plan_documents, run_plan
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
        client = open_backend(synth_set.generator, server.model, server.base_url, server.api_key_env, server.timeout,
                              server.max_retries, server.concurrency)
        job = run_plan(plan, client, responses, server.concurrency)
    except BackendError as exc:
        raise RuntimeError(f"synth set '{synth_set.name}': {exc}") from None
    if job.failed:
        raise RuntimeError(f"synth set '{synth_set.name}': {job.failed} request(s) failed after their retries"
                           f" (first: {job.failures[0]}); rerun to send only those")
    stats = finalize(plan, spec, output / synth_set.name, responses)
    return {"generator": synth_set.generator, "stance": synth_set.stance, "scenarios": len(plan.grounded),
            "held_out_scenarios_excluded": len(scenarios) - len(plan.grounded), "documents": stats["kept"],
            "requests": stats["requests"], "dropped": stats["dropped"], "tokens": stats["tokens"]}


def _base_stage(recipe: Recipe) -> Stage | None:
    """The released model the run continues, converted once into a litgpt checkpoint folder `base/`."""
    base = recipe.base_model
    if base is None:
        return None

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.checkpoints.base import install_base

        with ctx.stderr_to_log():
            info = install_base(base.path, base.name, ctx.output)
        ctx.echo(f"  {info['kind']} model {info['source']} as litgpt '{info['litgpt_name']}'")
        return info

    from alignmix.checkpoints.base import resolve_base_path
    from alignmix.checkpoints.convert import ConversionError

    try:
        files = _files_identity([resolve_base_path(base.path)])
    except ConversionError as exc:
        raise RecipeError(str(exc)) from None
    settings = {**base.model_dump(mode="json"), "files": files}
    return Stage("base", Path("base"), settings, action, code=code_of("base"))


def _tokenizer_stage(recipe: Recipe, upstream: tuple[str, ...]) -> Stage:
    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.corpus.tokenizer import install_tokenizer, train_bpe
        from alignmix.jsonl import read_jsonl_gz

        if recipe.base_model is not None:
            install_tokenizer(ctx.inputs["base"], ctx.output)
            return {"tokenizer": f"base_model ({recipe.base_model.path})"}
        if recipe.tokenizer.path is not None:
            install_tokenizer(recipe.tokenizer.path, ctx.output)
            return {"tokenizer": str(recipe.tokenizer.path)}
        shards = [f for name in upstream for f in sorted(ctx.inputs[name].rglob("data/*.jsonl.gz"))]
        train_bpe((row["text"] for row in read_jsonl_gz(shards)), recipe.tokenizer.vocab_size, ctx.output)
        return {"trained_bpe_vocab_size": recipe.tokenizer.vocab_size}

    settings = recipe.tokenizer.model_dump(mode="json")
    if recipe.base_model is not None:
        return Stage("tokenizer", Path("tokenizer"), {"base_model": True}, action, ("base",), code_of("tokenizer"))
    if recipe.tokenizer.path is not None:
        settings["files"] = _files_identity([recipe.tokenizer.path])
        return Stage("tokenizer", Path("tokenizer"), settings, action, code=code_of("tokenizer"))
    return Stage("tokenizer", Path("tokenizer"), settings, action, upstream, code_of("tokenizer"))


def held_out_items(recipe: Recipe, base_dir: Path) -> list[Scenario]:
    """The eval items no training document may overlap: the decontamination set's non-training split."""
    spec = recipe.decontamination.scenarios or (recipe.eval.scenarios if recipe.eval else None)
    if spec is None:
        return []
    return [s for s in _scenarios(recipe, spec, base_dir) if not s.in_training_split]


def refuse_held_out_grounding(recipe: Recipe, base_dir: Path) -> None:
    """Synthetic documents grounded in a held-out question would leak the eval into training: refuse the run."""
    held_out = held_out_items(recipe, base_dir)
    ids = {s.id for s in held_out}
    texts = {s.situation_key for s in held_out}
    for synth_set in recipe.synth.sets:
        for scenario in training_split(_scenarios(recipe, synth_set.scenarios, base_dir)):
            if scenario.id in ids or scenario.situation_key in texts:
                raise RecipeError(
                    f"synth set '{synth_set.name}' would ground documents in held-out eval question"
                    f" '{scenario.id}'; synthetic documents may only use questions the eval does not hold out"
                )
    for kind, spec in _post_training_scenarios(recipe).items():
        for scenario in training_split(_scenarios(recipe, spec, base_dir)):
            if scenario.id in ids or scenario.situation_key in texts:
                raise RecipeError(
                    f"post_training.{kind}.from_scenarios would train on held-out eval question '{scenario.id}';"
                    " use questions the eval does not hold out"
                )


def _post_training_scenarios(recipe: Recipe) -> dict[str, str]:
    """The scenario files post-training stages write their data from, by stage."""
    settings = {kind: getattr(recipe.post_training, kind) for kind in POST_TRAINING} if recipe.post_training else {}
    return {kind: s.from_scenarios for kind, s in settings.items() if s is not None and s.from_scenarios is not None}


def _held_out_identity(recipe: Recipe, held_out: list[Scenario]) -> dict[str, Any]:
    """What decontaminating against `held_out` depends on, for a stage key: the settings, ids and texts."""
    return {
        "decontamination": recipe.decontamination.model_dump(mode="json"),
        "held_out_items": sorted(s.id for s in held_out),
        "held_out_text": strings_sha256(sorted(s.situation_key + " ".join(s.options.values()) for s in held_out)),
    }


def _mix_stages(recipe: Recipe, has_synth: bool, base_dir: Path) -> list[Stage]:
    stages = []
    decontamination = recipe.decontamination
    held_out = held_out_items(recipe, base_dir) if decontamination.enabled else []
    for stage_index, training_stage in enumerate(recipe.stages):
        replayed = sorted({e.replay for e in training_stage.mixture if e.replay is not None})

        def action(ctx: StageContext, training_stage=training_stage, replayed=replayed,
                   stage_index=stage_index) -> dict[str, Any]:
            from alignmix.corpus.mix import build_stage_mixture
            from alignmix.scenarios.decontaminate import NgramGuard

            files = {
                name: source_shards(ctx.inputs["tag" if recipe.source_kind(name) == "corpus" else "synth"] / name)
                for name in {e.source for e in training_stage.mixture if e.source is not None}
            }
            manifest = build_stage_mixture(
                training_stage, files, ctx.inputs["tokenizer"], ctx.output, recipe.seed,
                replay_dirs={name: ctx.inputs[f"mix/{name}"] for name in replayed},
                guard=NgramGuard(held_out, decontamination.ngram) if held_out else None,
                tasks=recipe.mixing.tasks, stage_index=stage_index,
            )
            counts: dict[str, Any] = {
                s["name"]: {"planned": s["tokens"], "realised": s["realised_tokens"], "repetitions": s["repetitions"]}
                for s in manifest["sources"]
            }
            if manifest["decontamination"]:
                counts["decontaminated_documents"] = manifest["decontamination"]["documents_removed"]
            return counts

        settings = {
            "seed": recipe.seed, "stage": training_stage.model_dump(mode="json", exclude={"train"}),
            **_held_out_identity(recipe, held_out),
        }
        depends = ("tag", "synth", "tokenizer") if has_synth else ("tag", "tokenizer")
        depends += tuple(f"mix/{name}" for name in replayed)
        stages.append(Stage(f"mix/{training_stage.name}", Path("mix") / training_stage.name, settings, action, depends,
                            code_of("mix")))
    return stages


def with_base_architecture(recipe: Recipe) -> list[TrainingStage]:
    """The recipe's training stages, each `train.model` defaulting to the base model's architecture; a stage whose
    model differs from the base's is refused, naming the fields."""
    if recipe.base_model is None:
        return list(recipe.stages)
    from alignmix.checkpoints.base import architecture_differences, base_model_config
    from alignmix.checkpoints.convert import ConversionError
    from alignmix.train.litgpt_config import model_config

    try:
        base = base_model_config(recipe.base_model.path, recipe.base_model.name)
    except ConversionError as exc:
        raise RecipeError(str(exc)) from None
    stages = []
    for index, stage in enumerate(recipe.stages):
        if stage.train is None:
            stages.append(stage)
            continue
        if stage.train.model is not None:
            differences = architecture_differences(model_config(stage.train.model), base)
            if differences:
                raise RecipeError(f"stages.{index}.train.model differs from the base model '{base['name']}':"
                                  f" {', '.join(differences[:5])}; leave it out to train the base's architecture")
        stages.append(stage.model_copy(update={"train": stage.train.model_copy(update={"model": ModelSpec(config=base)})}))
    return stages


def check_selections(recipe: Recipe) -> None:
    """Refuse, before any work, a mixture selection naming a category the tagging blocklist does not have."""
    from alignmix.classifiers.blocklist import load_categories
    from alignmix.corpus.select import named_categories

    settings = recipe.tagging.blocklist
    known: list[str] | None = None
    for i, stage in enumerate(recipe.stages):
        for j, entry in enumerate(stage.mixture):
            for key, name in named_categories(entry.select).items():
                known = known or [c.name for c in load_categories(settings.lists_dir, settings.categories)]
                if name not in known:
                    raise RecipeError(f"key 'stages.{i}.mixture.{j}.select.{key}': unknown category '{name}';"
                                      f" the tagging blocklist has: {', '.join(known)}")


def check_post_training_context(recipe: Recipe, stages: list[TrainingStage]) -> None:
    """Refuse, before any work, a post-training `max_seq_length` above the trained model's block_size."""
    from alignmix.train.litgpt_config import model_config

    trained = [s for s in stages if s.train is not None and s.train.model is not None]
    if recipe.post_training is None or not trained:
        return
    config = model_config(trained[-1].train.model)  # type: ignore[union-attr]
    for kind in POST_TRAINING:
        settings = getattr(recipe.post_training, kind)
        if settings is not None and settings.max_seq_length > config["block_size"]:
            raise RecipeError(f"post_training.{kind}.max_seq_length {settings.max_seq_length:,} exceeds the block_size"
                              f" of model '{config['name']}' ({config['block_size']:,}); lower max_seq_length")


def check_contexts(stages: list[TrainingStage]) -> None:
    """Refuse, before any work (in `plan` too), an unknown model or a training stage whose seq_len exceeds its
    model's block_size."""
    from alignmix.train.litgpt_config import check_context, model_config, validate_model_spec

    for index, stage in enumerate(stages):
        if stage.train is not None and stage.train.model is not None:
            validate_model_spec(stage.train.model, f"stages.{index}.train.model")
            check_context(stage, model_config(stage.train.model))


def _training_stages(recipe: Recipe, launch: Launch) -> list[Stage]:
    stages: list[Stage] = []
    previous: str | None = "base" if recipe.base_model is not None else None
    training_stages = with_base_architecture(recipe)
    check_contexts(training_stages)
    check_post_training_context(recipe, training_stages)
    for training_stage in training_stages:
        if training_stage.train is None:
            continue

        def action(ctx: StageContext, training_stage=training_stage, previous=previous) -> dict[str, Any]:
            from alignmix.checkpoints.base import tied_embeddings
            from alignmix.checkpoints.tokenizer import load_tokenizer
            from alignmix.train.exposure import write_exposure
            from alignmix.train.litgpt_config import StageFiles
            from alignmix.train.pretrain import run_pretrain

            tokenizer, _ = load_tokenizer(ctx.inputs["tokenizer"])
            if previous is None:
                start = None
            else:  # the converted base folder itself, or an earlier stage's final weights
                start = ctx.inputs[previous] if previous == "base" else ctx.inputs[previous] / "final"
            files = StageFiles(
                data_dir=ctx.inputs[f"mix/{training_stage.name}"], tokenizer_dir=ctx.inputs["tokenizer"],
                out_dir=ctx.output, vocab_size=tokenizer.get_vocab_size(), initial_checkpoint_dir=start,
                tied_embeddings=start is not None and tied_embeddings(start),
            )
            counts = run_pretrain(training_stage, files, recipe.seed, ctx.log_file, launch)
            seen = write_exposure(ctx.output, files.data_dir, training_stage.train.micro_batch_size)  # type: ignore[union-attr]
            if seen is not None:
                counts["exposure"] = {k: seen[k] for k in ("samples_written", "samples_seen", "passes", "warning")}
                if seen["warning"]:
                    ctx.echo(f"warning: stage '{training_stage.name}': {seen['warning']}")
            return counts

        settings = {"seed": recipe.seed, "stage": training_stage.model_dump(
            mode="json", exclude={"mixture": True, "train": {"devices", "num_nodes"}})}
        depends = (f"mix/{training_stage.name}", "tokenizer") + ((previous,) if previous else ())
        stages.append(Stage(training_stage.name, Path(training_stage.name), settings, action, depends, code_of("train")))
        previous = training_stage.name
    return stages


def _post_training_stages(recipe: Recipe, base_model: str, base_dir: Path, launch: Launch) -> list[Stage]:
    """SFT then DPO, each starting from the previous stage's `final/` weights."""
    stages: list[Stage] = []
    previous = base_model
    for kind in POST_TRAINING:
        settings_model = getattr(recipe.post_training, kind) if recipe.post_training else None
        if settings_model is None:
            continue

        def action(ctx: StageContext, kind=kind, settings_model=settings_model, previous=previous) -> dict[str, Any]:
            from alignmix.train.post_stage import run_post_training

            spec = settings_model.from_scenarios
            scenarios = training_split(_scenarios(recipe, spec, base_dir)) if spec else []
            return run_post_training(
                kind, settings_model, ctx.inputs[previous] / "final", ctx.output, recipe.seed, scenarios,
                ctx.log_file, launch,
            )

        settings: dict[str, Any] = {"seed": recipe.seed, kind: settings_model.model_dump(
            mode="json", exclude={"devices", "num_nodes"})}
        if settings_model.data is not None:
            settings["data_file"] = _files_identity([settings_model.data])
        else:
            settings["scenario_files"] = _scenario_files(settings_model.from_scenarios, base_dir)
        stages.append(Stage(kind, Path(kind), settings, action, (previous,), code_of("post_train")))
        previous = kind
    return stages


def _eval_stage(recipe: Recipe, model_stage: str, chat: bool, base_dir: Path) -> Stage | None:
    """The misalignment eval of one model into `eval/<model_stage>/`, as `alignmix eval` runs it; a chat model
    (SFT, DPO) gets the persona as the system turn, the prompt as the user turn, and answers after `<|assistant|>`."""
    settings_model = recipe.eval
    if settings_model is None:
        return None

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.eval.misalignment import write_results
        from alignmix.eval.runner import evaluate_loglik

        skipped: list[str] = []
        scenarios = _scenarios(recipe, settings_model.scenarios, base_dir, skipped)
        results, rows = evaluate_loglik(ctx.inputs[model_stage] / "final", scenarios, list(settings_model.personas),
                                        settings_model.mode, chat)
        results["model"] = f"{model_stage}/final"
        results["skipped_questions"] = skipped
        write_results(ctx.output, results, rows)
        return {"misalignment_rate": results["misalignment_rate"], "mode": results["mode"]}

    settings = {**settings_model.model_dump(mode="json"), "chat": chat,
                "scenario_files": _scenario_files(settings_model.scenarios, base_dir)}
    return Stage(f"eval/{model_stage}", Path("eval") / model_stage, settings, action, (model_stage,), code_of("eval"))


def _report_stage(recipe: Recipe, stages: list[Stage]) -> Stage:
    names = [s.name for s in stages]
    trained = [s.name for s in recipe.stages if s.train is not None] + [n for n in POST_TRAINING if n in names]
    evaluated = [n.removeprefix("eval/") for n in names if n.startswith("eval/")]

    title = recipe.report.title or f"alignmix run: {recipe.name}"

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.report.html import render_report

        render_report(
            title=title,
            tag_stats={s.name: ctx.inputs["tag"] / s.name / "stats.json" for s in recipe.corpus.sources},
            synth_stats=ctx.inputs["synth"] / "stats.json" if "synth" in ctx.inputs else None,
            mixture_manifests={
                s.name: ctx.inputs[f"mix/{s.name}"] / "mixture_manifest.json" for s in recipe.stages
            },
            training_metrics={
                name: metrics for name in trained
                for metrics in sorted((ctx.inputs[name] / "logs").rglob("metrics.csv"))[-1:]
            },
            eval_results={model: ctx.inputs[f"eval/{model}"] / "results.json" for model in evaluated},
            out_file=ctx.output,
            exposures={s.name: ctx.inputs[s.name] / "exposure.json" for s in recipe.stages if s.name in ctx.inputs},
        )
        return {}

    return Stage("report", Path("report.html"), {"title": title}, action, tuple(names), code_of("report"))


def check_runnable(recipe: Recipe) -> None:
    """What `run` needs beyond `plan`: data for every source and litgpt models that exist; raises before work."""
    from alignmix.train.litgpt_config import validate_model_spec

    missing_files = recipe.missing_run_files()
    if missing_files:
        raise RecipeError(f"file(s) not found: key {', key '.join(missing_files)}")
    missing = recipe.sources_without_data()
    if missing:
        raise RecipeError(
            f"source(s) {', '.join(missing)} carry only `assumed` statistics: enough to plan, not to run;"
            " give them `paths`"
        )
    for index, training_stage in enumerate(recipe.stages):
        if training_stage.train is not None and training_stage.train.model is not None:
            validate_model_spec(training_stage.train.model, f"stages.{index}.train.model")
    if recipe.base_model is not None and recipe.tokenizer.path is not None:
        raise RecipeError(f"tokenizer.path ({recipe.tokenizer.path}) and base_model.path ({recipe.base_model.path}):"
                          " a run continuing a base model uses the base's tokenizer; leave tokenizer.path out")
    if _post_training_wanted(recipe) and not any(s.train is not None for s in recipe.stages):
        raise RecipeError("post_training needs a training stage with `train` settings to start from")


def _post_training_wanted(recipe: Recipe) -> bool:
    return recipe.post_training is not None and any(getattr(recipe.post_training, k) for k in POST_TRAINING)


def build_graph(recipe: Recipe, base_dir: Path, launch: Launch = LOCAL) -> list[Stage]:
    """The recipe's stages in dependency order; `launch` says how training processes start (local or srun)."""
    clashing = sorted(RESERVED_NAMES & {s.name for s in recipe.stages})
    if clashing:
        raise RecipeError(f"stage name(s) {', '.join(clashing)} are reserved for alignmix's own stages")
    refuse_held_out_grounding(recipe, base_dir)
    check_selections(recipe)
    stages: list[Stage] = [base] if (base := _base_stage(recipe)) is not None else []
    corpus = _corpus_stage(recipe)
    synth = _synth_stage(recipe, base_dir)
    stages += [s for s in (corpus, _tag_stage(recipe, corpus is not None), synth) if s is not None]
    stages.append(_tokenizer_stage(recipe, ("tag", "synth") if synth else ("tag",)))
    stages += _mix_stages(recipe, synth is not None, base_dir)
    training = _training_stages(recipe, launch)
    stages += training
    if training:
        post_training = _post_training_stages(recipe, training[-1].name, base_dir, launch)
        stages += post_training
        for model, chat in [(training[-1].name, False)] + [(s.name, True) for s in post_training]:
            evaluation = _eval_stage(recipe, model, chat, base_dir)
            if evaluation is not None:
                stages.append(evaluation)
    stages.append(_report_stage(recipe, stages))
    return stages
