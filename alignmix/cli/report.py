"""Looking at runs: `alignmix report` (conditions compared) and `alignmix stats` (corpus statistics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from alignmix.cli.common import console, fail, hold_output


def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or eval folders holding results.json).")],
    out: Annotated[Path, typer.Option("--out", help="The comparison page (HTML); JSON is written beside it.")],
    baseline: Annotated[str | None, typer.Option("--baseline", help="The run the deltas are taken from (its folder name or label); each model is compared with the same model stage of it. Default: the first run.")] = None,
) -> None:
    """Compare runs: misalignment per split and persona, capability scores, deltas from a baseline."""
    from alignmix.errors import AlignmixError
    from alignmix.report.compare import (
        collect_conditions,
        render_comparison,
        tampering_of_runs,
    )
    from alignmix.report.suites import suite_tampering_of_runs

    try:
        conditions = collect_conditions(runs)
        data = render_comparison(conditions, out, baseline, suite_tampering_of_runs(runs), tampering_of_runs(runs))
    except AlignmixError as exc:  # a results.json that is not JSON or not an eval result: named
        fail(str(exc))
    for row in data["conditions"]:
        rate = row["misalignment_rate"]
        shown = "n/a (no parsed answers)" if rate["mean"] is None else f"{rate['mean']:.3f} ± {rate['se']:.3f}"
        console.print(f"{row['name']}: {shown}", highlight=False)
    console.print(f"report: {out}  json: {out.with_suffix('.json')}", highlight=False)


def stats(
    ctx: typer.Context,
    folders: Annotated[list[Path], typer.Argument(help="Run folders, tag outputs or mixture folders.")],
    report: Annotated[Path, typer.Option("--report", help="Where to write the HTML page.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the statistics as JSON.")] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="Tokenizer folder for token counts (default: FOLDER/tokenizer if present)."),
    ] = None,
) -> None:
    """Corpus statistics over tagged shards and mixture manifests: prevalence, terms, stance, lengths, mixtures."""
    from alignmix.report.corpus_stats import collect
    from alignmix.report.html import render_stats_page

    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        fail(f"not a folder: {', '.join(missing)}")
    for written in (report, *([json_out] if json_out else [])):
        hold_output(ctx, written, "--report" if written == report else "--json", file=True)
    if tokenizer is None:
        tokenizer = next((f / "tokenizer" for f in folders if (f / "tokenizer" / "tokenizer.json").is_file()), None)
    try:
        statistics = collect(folders, tokenizer)
    except FileNotFoundError as exc:
        fail(str(exc))
    render_stats_page(statistics, report)
    if json_out is not None:
        json_out.write_text(json.dumps(statistics, indent=2))
    for name, source in statistics["sources"].items():
        console.print(
            f"{name}: {source['documents']:,} documents, {source['flagged']:,} flagged ({100 * source['flag_rate']:.2f}%)",
            highlight=False,
        )
    console.print(f"report: {report}" + (f"  json: {json_out}" if json_out else ""))


def register(app: typer.Typer) -> None:
    """Add `report` and `stats` to the `alignmix` app."""
    app.command("report")(report)
    app.command("stats")(stats)
