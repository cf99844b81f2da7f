"""The report stage's wiring: the run's HTML report from the files every other stage wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.code_version import code_of
from alignmix.recipe import Recipe
from alignmix.run import Graph, Stage, StageContext


def report_stage(recipe: Recipe, graph: Graph) -> Stage:
    """The report of every stage in `graph` (which it depends on): its trained models' metrics and its evals."""
    trained = [m.name for m in graph.models]
    evals = graph.evals()
    suites = {suite: found for suite in ("em", "personality") if (found := graph.evals(suite))}
    title = recipe.report.title or f"alignmix run: {recipe.name}"

    def suite_results(inputs: dict[str, Path]) -> dict[str, dict[str, Path]]:
        return {suite: {model: inputs[stage.name] / "results.json" for model, stage in found.items()}
                for suite, found in suites.items()}

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
            eval_results={model: ctx.inputs[stage.name] / "results.json" for model, stage in evals.items()},
            out_file=ctx.output,
            exposures={s.name: ctx.inputs[s.name] / "exposure.json" for s in recipe.stages if s.name in ctx.inputs},
            tampering={t.name: t.from_stage for t in recipe.tamper},
            suite_results=suite_results(ctx.inputs),
        )
        return {}

    return Stage("report", Path("report.html"), {"title": title}, action, tuple(graph.names), code_of("report"),
                 kind="report")
