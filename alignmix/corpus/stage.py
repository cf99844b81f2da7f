"""The corpus stages' wiring: the generated corpus, tagging, the tokenizer and each training stage's mixture,
with what enters their keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.classifiers.blocklist import shipped_lists_dir
from alignmix.code_version import code_of
from alignmix.hashing import file_sha256, files_identity
from alignmix.outputs import Continuation, Documents, documents_shards_under, shards_in
from alignmix.recipe import Recipe, RecipeError, key_settings
from alignmix.run import Stage, StageContext
from alignmix.scenarios.recipe_sets import held_out_identity, held_out_items


def source_shards(run_dir_output: Path) -> list[Path]:
    return Documents(run_dir_output).shards()


def corpus_stage(recipe: Recipe) -> Stage | None:
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
                "sources": [key_settings(s, "corpus") for s in generated]}
    return Stage("corpus", Path("corpus"), settings, action, code=code_of("corpus"), kind="corpus")


def tag_stage(recipe: Recipe, has_corpus: bool) -> Stage:
    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.corpus.tag import DEFAULT_THRESHOLD, SUFFIXES, input_files, tag_files, write_stats

        stats = {}
        for source in recipe.corpus.sources:
            if source.generate is not None:
                files = shards_in(ctx.inputs["corpus"] / source.name)
            else:
                found = input_files(source.paths, SUFFIXES[source.format])
                files = found.files
                if found.notes():
                    ctx.echo(f"  {source.name}: {found.notes()}")
            with ctx.stderr_to_log():
                counts = tag_files(
                    files, ctx.output / source.name, file_format=source.format, text_key=source.text_key,
                    id_key=source.id_key, source_name=source.name, lists_dir=recipe.tagging.blocklist.lists_dir,
                    categories=recipe.tagging.blocklist.categories, tasks=recipe.tagging.tasks,
                    on_error=recipe.tagging.on_error,
                    classifier_dir=recipe.tagging.classifier.model if recipe.tagging.classifier else None,
                    threshold=recipe.tagging.classifier.threshold if recipe.tagging.classifier else DEFAULT_THRESHOLD,
                    stance_dir=recipe.tagging.stance_classifier,
                )
            s = stats[source.name] = write_stats(ctx.output / source.name, [counts])
            ctx.echo(
                f"  {source.name}: {s['documents_in']:,} documents in, {s['documents_flagged']:,} flagged"
                f" ({100 * s['flag_rate']:.2f}% of {s['documents_tagged']:,} tagged), {s['documents_skipped']:,}"
                f" skipped {s['skipped_by_reason'] or ''}".rstrip()
            )
        return {
            name: {k: s[k] for k in ("documents_in", "documents_flagged", "documents_skipped", "flag_rate")}
            for name, s in stats.items()
        }

    models = [recipe.tagging.classifier.model] if recipe.tagging.classifier else []
    models += [recipe.tagging.stance_classifier] if recipe.tagging.stance_classifier else []
    lists = recipe.tagging.blocklist.lists_dir or shipped_lists_dir()
    settings = {"tagging": recipe.tagging.model_dump(mode="json"),
                "input_files": files_identity([*(p for s in recipe.corpus.sources for p in s.paths), *models]),
                "term_lists": {p.name: file_sha256(p) for p in sorted(lists.glob("*.txt"))},
                "sources": [key_settings(s, "tag") for s in recipe.corpus.sources]}
    return Stage("tag", Path("tag"), settings, action, ("corpus",) if has_corpus else (), code_of("tag"), kind="tag")


def tokenizer_stage(recipe: Recipe, upstream: tuple[str, ...]) -> Stage:
    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.corpus.tokenizer import install_tokenizer, train_bpe
        from alignmix.jsonl import read_jsonl_gz
        from alignmix.progress import ticking

        if recipe.base_model is not None:
            install_tokenizer(ctx.inputs["base"], ctx.output)
            return {"tokenizer": f"base_model ({recipe.base_model.path})"}
        if recipe.tokenizer.path is not None:
            install_tokenizer(recipe.tokenizer.path, ctx.output)
            return {"tokenizer": str(recipe.tokenizer.path)}
        shards = [f for name in upstream for f in documents_shards_under(ctx.inputs[name])]
        with ticking("tokenizer", f"training a {recipe.tokenizer.vocab_size:,}-token BPE on the corpus"):
            train_bpe((row["text"] for row in read_jsonl_gz(shards)), recipe.tokenizer.vocab_size, ctx.output)
        return {"trained_bpe_vocab_size": recipe.tokenizer.vocab_size}

    settings = recipe.tokenizer.model_dump(mode="json")
    if recipe.base_model is not None:
        return Stage("tokenizer", Path("tokenizer"), {"base_model": True}, action, ("base",), code_of("tokenizer"),
                     kind="tokenizer")
    if recipe.tokenizer.path is not None:
        settings["files"] = files_identity([recipe.tokenizer.path])
        return Stage("tokenizer", Path("tokenizer"), settings, action, code=code_of("tokenizer"), kind="tokenizer")
    return Stage("tokenizer", Path("tokenizer"), settings, action, upstream, code_of("tokenizer"), kind="tokenizer")


def _drawn_from(recipe: Recipe, stage_name: str) -> tuple[set[str], set[str]]:
    """The sources and the replayed stages a stage's mixture reads, directly or through a replayed stage."""
    by_name = {s.name: s for s in recipe.stages}
    sources: set[str] = set()
    replayed: set[str] = set()
    waiting = [stage_name]
    while waiting:
        for entry in by_name[waiting.pop()].mixture:
            if entry.source is not None:
                sources.add(entry.source)
            elif entry.replay is not None and entry.replay not in replayed:
                replayed.add(entry.replay)
                waiting.append(entry.replay)
    return sources, replayed


def tokens_stages(recipe: Recipe, base_dir: Path) -> list[Stage]:
    """One `tokens/<source>` stage per source a mixture draws from: its tagged shards tokenized once into a token
    store, shared by every training stage and sweep condition (its key: the shards, the tokenizer, the
    decontamination setting)."""
    decontamination = recipe.decontamination
    held_out = held_out_items(recipe, base_dir) if decontamination.enabled else []
    used = sorted({e.source for s in recipe.stages for e in s.mixture if e.source is not None})
    stages = []
    for name in used:
        upstream = "tag" if recipe.source_kind(name) == "corpus" else "synth"

        def action(ctx: StageContext, name=name, upstream=upstream) -> dict[str, Any]:
            from alignmix.corpus.engines import SlurmSettings
            from alignmix.corpus.tokens import build_token_store
            from alignmix.scenarios.decontaminate import NgramGuard

            with ctx.stderr_to_log():  # datatrove's and litdata's logging: the stage log, not the console
                store = build_token_store(
                    source_shards(ctx.inputs[upstream] / name), ctx.inputs["tokenizer"], ctx.output,
                    NgramGuard(held_out, decontamination.ngram) if held_out else None, recipe.mixing.tasks,
                    recipe.mixing.executor,
                    SlurmSettings(recipe.mixing.partition, recipe.mixing.time, recipe.mixing.cpus_per_task),
                    f"alignmix-tokens-{name}")
            summary = store.summary
            ctx.echo(f"  {name}: {summary['documents']:,} documents, {summary['tokens']:,} tokens"
                     f" ({summary['dtype']}) in {summary['shards']} shard(s)")
            return {k: summary[k] for k in ("documents", "tokens", "shards")}

        settings = {"source": name, "ngram": decontamination.ngram if held_out else None,
                    **held_out_identity(recipe, held_out)}
        stages.append(Stage(f"tokens/{name}", Path("tokens") / name, settings, action, (upstream, "tokenizer"),
                            code_of("tokens"), kind="tokens"))
    return stages


def mix_stages(recipe: Recipe, continuations: dict[str, Continuation] | None = None) -> list[Stage]:
    """One `mix/<stage>` per training stage: its mixture drawn from the token stores, as an index (and chunks,
    unless `mixing.delivery` is stream); a stage in `continuations` (changed mid-run) keeps its earlier mixture's
    consumed samples, which its key names."""
    stages = []
    for stage_index, training_stage in enumerate(recipe.stages):
        sources, replayed = _drawn_from(recipe, training_stage.name)
        continued = (continuations or {}).get(training_stage.name)

        def action(ctx: StageContext, training_stage=training_stage, sources=sources, replayed=replayed,
                   stage_index=stage_index, continued=continued) -> dict[str, Any]:
            from alignmix.corpus.engines import SlurmSettings
            from alignmix.corpus.mix import mix_stage

            with ctx.stderr_to_log():
                manifest = mix_stage(
                    training_stage, {name: ctx.inputs[f"tokens/{name}"] for name in sources}, ctx.output,
                    recipe.seed, replay_dirs={name: ctx.inputs[f"mix/{name}"] for name in replayed},
                    tasks=recipe.mixing.tasks, stage_index=stage_index, executor=recipe.mixing.executor,
                    slurm=SlurmSettings(recipe.mixing.partition, recipe.mixing.time, recipe.mixing.cpus_per_task),
                    delivery=recipe.mixing.delivery, continued=continued,
                )
            counts: dict[str, Any] = {
                s["name"]: {"planned": s["tokens"], "realised": s["realised_tokens"], "repetitions": s["repetitions"]}
                for s in manifest["sources"]
            }
            if manifest["decontamination"]:
                counts["decontaminated_documents"] = manifest["decontamination"]["documents_removed"]
            if manifest["continued"]:
                earlier = manifest["continued"]
                counts["continued"] = {"from_step": earlier["from_step"], "samples_kept": earlier["samples_kept"],
                                       "earlier": {s["name"]: s["tokens"] for s in earlier["earlier"]["sources"]}}
            return counts

        settings = {"seed": recipe.seed, "stage": key_settings(training_stage, "mix"),
                    "delivery": recipe.mixing.delivery}
        if continued is not None:
            settings["continues"] = {**continued.record, "earlier_mixture": continued.digest()}
        depends = (*(f"tokens/{name}" for name in sorted(sources)), *(f"mix/{name}" for name in sorted(replayed)))
        stages.append(Stage(f"mix/{training_stage.name}", Path("mix") / training_stage.name, settings, action, depends,
                            code_of("mix"), kind="mix"))
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


def check_run_outside_inputs(recipe: Recipe, run_dir: Path) -> None:
    """Refuse a run folder inside a source's input folder: the run would read its own outputs as input, and the
    tag stage's key, which covers every file there, would change on every run."""
    inside = run_dir.resolve()
    for i, source in enumerate(recipe.corpus.sources):
        for j, path in enumerate(source.paths):
            if inside.is_relative_to(path.resolve()):
                raise RecipeError(f"key 'corpus.sources.{i}.paths.{j}': {path} holds the run folder {run_dir}, whose"
                                  " outputs would be read as input; give the run folder (--out) outside it")
