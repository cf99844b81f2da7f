"""The eval stages' wiring: the misalignment eval of each trained model, with what enters its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.code_version import code_of
from alignmix.outputs import FINAL_DIR, ModelOutput
from alignmix.recipe import Recipe
from alignmix.run import Stage, StageContext
from alignmix.scenarios.recipe_sets import recipe_scenarios, scenario_files_identity


def eval_stage(recipe: Recipe, model_stage: str, chat: bool, base_dir: Path) -> Stage | None:
    """The misalignment eval of one model into `eval/<model_stage>/`, as `alignmix eval` runs it; a chat model
    (SFT, DPO) gets the persona as the system turn, the prompt as the user turn, and answers after `<|assistant|>`."""
    settings_model = recipe.eval
    if settings_model is None or "misalignment" not in settings_model.suites:
        return None

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.eval.misalignment import write_results
        from alignmix.eval.runner import evaluate_loglik

        skipped: list[str] = []
        scenarios = recipe_scenarios(recipe, settings_model.scenarios, base_dir, skipped)
        model = ModelOutput(ctx.inputs[model_stage]).final
        results, rows = evaluate_loglik(model, scenarios, list(settings_model.personas), settings_model.mode, chat)
        results["model"] = f"{model_stage}/{FINAL_DIR}"
        results["skipped_questions"] = skipped
        write_results(ctx.output, results, rows)
        return {"misalignment_rate": results["misalignment_rate"], "mode": results["mode"]}

    suites = {"suites", "em", "personality"}  # other stages' settings (alignmix.eval.suite_stages)
    settings = {**settings_model.model_dump(mode="json", exclude=suites), "chat": chat,
                "scenario_files": scenario_files_identity(settings_model.scenarios, base_dir)}
    return Stage(f"eval/{model_stage}", Path("eval") / model_stage, settings, action, (model_stage,), code_of("eval"),
                 kind="eval", model=model_stage, suite="misalignment")
