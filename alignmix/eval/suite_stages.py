"""The eval suites beyond the scenario questions, as run stages: `eval-em/<model>` and `eval-personality/<model>`
for every model the misalignment eval scores (the last training stage, SFT, DPO and each tamper stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.code_version import code_of
from alignmix.hashing import files_identity
from alignmix.outputs import FINAL_DIR, ModelOutput
from alignmix.recipe import EMSettings, PersonalitySettings, Recipe, key_settings
from alignmix.run import Stage, StageContext

SUITE_STAGE_PREFIX = {"em": "eval-em", "personality": "eval-personality"}


def em_stage(recipe: Recipe, settings: EMSettings, model_stage: str) -> Stage:
    """Answer the EM questions with `model_stage`'s model, judged by the recipe's judges, into `eval-em/<model>/`;
    answers and verdicts are appended as they arrive, so an interrupted stage resumes without paying twice."""

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.eval.em import answering_backend, evaluate_em, load_human_labels, load_questions, write_em
        from alignmix.eval.judge import open_judge
        from alignmix.llm.backend import Sampling

        questions, skipped = load_questions(settings.questions)
        human = load_human_labels(settings.human_labels) if settings.human_labels else None
        judges = [open_judge(spec) for spec in settings.all_judges]
        sampling = Sampling(max_tokens=settings.max_tokens, temperature=settings.temperature)
        model = ModelOutput(ctx.inputs[model_stage]).final
        with answering_backend(str(model), f"{model_stage}/{FINAL_DIR}") as backend:
            results, rows = evaluate_em(backend, questions, judges, ctx.output, sampling, settings.samples,
                                        recipe.seed, settings.threshold, settings.coherence_threshold, human)
        results["skipped_questions"] = skipped
        write_em(ctx.output, results, rows)
        return {"em_rate": results["em_rate"], "judge": results["judge"]}

    inputs = [settings.questions] + ([settings.human_labels] if settings.human_labels else [])
    key = {"seed": recipe.seed, "em": key_settings(settings, "eval"), "files": files_identity(inputs)}
    name = f"{SUITE_STAGE_PREFIX['em']}/{model_stage}"
    return Stage(name, Path(name), key, action, (model_stage,), code_of("eval"), kind="eval", model=model_stage,
                 suite="em")


def personality_stage(recipe: Recipe, settings: PersonalitySettings, model_stage: str, chat: bool) -> Stage:
    """Score the personality items on `model_stage`'s model into `eval-personality/<model>/`."""
    personas = list(recipe.eval.personas) if recipe.eval else ["none"]

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.eval.personality import evaluate_personality_model, load_items, write_personality

        folder = ModelOutput(ctx.inputs[model_stage]).final
        results, rows = evaluate_personality_model(
            str(folder), load_items(settings.items), personas, settings.mode == "letter", f"{model_stage}/{FINAL_DIR}",
            settings.max_tokens, responses=ctx.output / "responses.jsonl", chat=chat)
        write_personality(ctx.output, results, rows)
        return {"per_trait": results["per_trait"]}

    key = {"personality": key_settings(settings, "eval"), "personas": personas, "chat": chat,
           "files": files_identity([settings.items])}
    name = f"{SUITE_STAGE_PREFIX['personality']}/{model_stage}"
    return Stage(name, Path(name), key, action, (model_stage,), code_of("eval"), kind="eval", model=model_stage,
                 suite="personality")


def suite_stages(recipe: Recipe, model_stage: str, chat: bool) -> list[Stage]:
    """The stages of every suite the recipe's `eval.suites` lists besides `misalignment`, for one model."""
    settings = recipe.eval
    if settings is None:
        return []
    stages = []
    if "em" in settings.suites and settings.em is not None:
        stages.append(em_stage(recipe, settings.em, model_stage))
    if "personality" in settings.suites and settings.personality is not None:
        stages.append(personality_stage(recipe, settings.personality, model_stage, chat))
    return stages
