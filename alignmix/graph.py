"""A recipe's stage graph: composes each stage package's wiring (`corpus.stage`, `synth.stage`, `train.stage`,
`eval.stage`, `report.stage`) in dependency order, and the checks a run needs before any work."""

from __future__ import annotations

from pathlib import Path

from alignmix.corpus.stage import (
    check_selections,
    corpus_stage,
    mix_stages,
    tag_stage,
    tokenizer_stage,
    tokens_stages,
)
from alignmix.eval.stage import eval_stage
from alignmix.eval.suite_stages import suite_stages
from alignmix.outputs import Continuation
from alignmix.recipe import POST_TRAINING, Recipe, RecipeError
from alignmix.report.stage import report_stage
from alignmix.run import Graph, Stage
from alignmix.scenarios.recipe_sets import refuse_held_out_grounding
from alignmix.synth.stage import synth_stage
from alignmix.train.launch import LOCAL, Launch
from alignmix.train.stage import base_stage, post_training_stages, tamper_stages, training_stages

RESERVED_NAMES = {"base", "corpus", "tag", "synth", "tokenizer", "tokens", "mix", "sft", "dpo", "eval", "report", "logs",
                  "eval-em", "eval-personality"}


def check_runnable(recipe: Recipe) -> None:
    """What `run` needs beyond `plan` (which checks the models when it builds the graph): files and data for every
    source; raises before work."""
    missing_files = recipe.missing_run_files()
    if missing_files:
        raise RecipeError(f"file(s) not found: key {', key '.join(missing_files)}")
    missing = recipe.sources_without_data()
    if missing:
        raise RecipeError(
            f"source(s) {', '.join(missing)} carry only `assumed` statistics: enough to plan, not to run;"
            " give them `paths`"
        )
    if recipe.base_model is not None and recipe.tokenizer.path is not None:
        raise RecipeError(f"tokenizer.path ({recipe.tokenizer.path}) and base_model.path ({recipe.base_model.path}):"
                          " a run continuing a base model uses the base's tokenizer; leave tokenizer.path out")
    if _post_training_wanted(recipe) and not any(s.train is not None for s in recipe.stages):
        raise RecipeError("post_training needs a training stage with `train` settings to start from")


def _post_training_wanted(recipe: Recipe) -> bool:
    return recipe.post_training is not None and any(getattr(recipe.post_training, k) for k in POST_TRAINING)


def build_graph(recipe: Recipe, base_dir: Path, launch: Launch = LOCAL,
                continuations: dict[str, Continuation] | None = None) -> Graph:
    """The recipe's stages in dependency order; `launch` says how training processes start (local or srun);
    `continuations` are the training stages whose mixture changed mid-run (`alignmix train --from-step`)."""
    names = [s.name for s in recipe.stages] + [t.name for t in recipe.tamper]
    clashing = sorted(RESERVED_NAMES & set(names))
    if clashing:
        raise RecipeError(f"stage name(s) {', '.join(clashing)} are reserved for alignmix's own stages")
    refuse_held_out_grounding(recipe, base_dir)
    check_selections(recipe)
    stages: list[Stage] = [base] if (base := base_stage(recipe)) is not None else []
    corpus = corpus_stage(recipe)
    synth = synth_stage(recipe, base_dir)
    stages += [s for s in (corpus, tag_stage(recipe, corpus is not None), synth) if s is not None]
    stages.append(tokenizer_stage(recipe, ("tag", "synth") if synth else ("tag",)))
    stages += tokens_stages(recipe, base_dir) + mix_stages(recipe, continuations)
    training = training_stages(recipe, launch, continuations)
    stages += training
    if training:
        post_training = post_training_stages(recipe, training[-1].name, base_dir, launch)
        stages += post_training
        stages += tamper_stages(recipe, [m.name for m in Graph(tuple(stages)).models], launch)
        chat_models = Graph(tuple(stages)).models[len(training):]  # post-trained and tampered
        for model, chat in [(training[-1].name, False)] + [(m.name, True) for m in chat_models]:
            evaluation = eval_stage(recipe, model, chat, base_dir)
            if evaluation is not None:
                stages.append(evaluation)
            stages += suite_stages(recipe, model, chat)
    return Graph((*stages, report_stage(recipe, Graph(tuple(stages)))))


def continuations_in(recipe: Recipe, run_dir: Path) -> dict[str, Continuation]:
    """The recipe's training stages that `alignmix train --from-step` continued in `run_dir` with a changed mixture."""
    found = {s.name: Continuation.of(run_dir, s.name) for s in recipe.stages}
    return {name: continuation for name, continuation in found.items() if continuation.exists()}
