"""The report stage's wiring: the run's HTML report from the files every other stage wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.code_version import code_of
from alignmix.recipe import POST_TRAINING, Recipe
from alignmix.run import Stage, StageContext


def report_stage(recipe: Recipe, stages: list[Stage]) -> Stage:
    names = [s.name for s in stages]
    trained = [s.name for s in recipe.stages if s.train is not None] + [n for n in POST_TRAINING if n in names]
    trained += [t.name for t in recipe.tamper]
    evaluated = [n.removeprefix("eval/") for n in names if n.startswith("eval/")]

    suite_stages = [n for n in names if n.startswith(("eval-em/", "eval-personality/"))]
    title = recipe.report.title or f"alignmix run: {recipe.name}"

    def suite_results(inputs: dict[str, Path]) -> dict[str, dict[str, Path]]:
        found: dict[str, dict[str, Path]] = {}
        for name in suite_stages:
            prefix, model = name.split("/", 1)
            found.setdefault(prefix.removeprefix("eval-"), {})[model] = inputs[name] / "results.json"
        return found

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
            tampering={t.name: t.from_stage for t in recipe.tamper},
            suite_results=suite_results(ctx.inputs),
        )
        return {}

    return Stage("report", Path("report.html"), {"title": title}, action, tuple(names), code_of("report"))
