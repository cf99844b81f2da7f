"""The report stage's wiring: the run's HTML report from the files every other stage wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.code_version import code_of
from alignmix.outputs import Documents, EvalOutput, Mixture, ModelOutput
from alignmix.recipe import Recipe
from alignmix.run import Graph, Stage, StageContext


def report_stage(recipe: Recipe, graph: Graph) -> Stage:
    """The report of every stage in `graph` (which it depends on): its trained models' metrics and its evals."""
    trained = [m.name for m in graph.models]
    evals = graph.evals()
    suites = {suite: found for suite in ("em", "personality") if (found := graph.evals(suite))}
    title = recipe.report.title or f"alignmix run: {recipe.name}"

    def suite_results(inputs: dict[str, Path]) -> dict[str, dict[str, Path]]:
        return {suite: {model: EvalOutput(inputs[stage.name]).results_path for model, stage in found.items()}
                for suite, found in suites.items()}

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.report.html import render_report

        render_report(
            title=title,
            tag_stats={s.name: Documents(ctx.inputs["tag"] / s.name).stats_path for s in recipe.corpus.sources},
            synth_stats=Documents(ctx.inputs["synth"]).stats_path if "synth" in ctx.inputs else None,
            mixture_manifests={s.name: Mixture(ctx.inputs[f"mix/{s.name}"]).manifest_path for s in recipe.stages},
            training_metrics={
                name: metrics for name in trained
                if (metrics := ModelOutput(ctx.inputs[name]).latest_metrics()) is not None
            },
            eval_results={model: EvalOutput(ctx.inputs[stage.name]).results_path for model, stage in evals.items()},
            out_file=ctx.output,
            exposures={s.name: ModelOutput(ctx.inputs[s.name]).exposure_path for s in recipe.stages
                       if s.name in ctx.inputs},
            tampering={t.name: t.from_stage for t in recipe.tamper},
            suite_results=suite_results(ctx.inputs),
        )
        return {}

    return Stage("report", Path("report.html"), {"title": title}, action, tuple(graph.names), code_of("report"),
                 kind="report")
