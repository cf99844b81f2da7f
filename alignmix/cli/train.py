"""`alignmix train` (one training stage, locally or across Slurm nodes) and `alignmix export` (HF format)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import typer

from alignmix.cli.common import (
    CpusPerTaskOpt,
    GpusPerNodeOpt,
    NodesOpt,
    PartitionOpt,
    RecipeArg,
    SetOpt,
    TimeOpt,
    console,
    fail,
    load_recipe_or_fail,
    run_recipe,
)
from alignmix.errors import AlignmixError
from alignmix.outputs import ModelOutput
from alignmix.recipe import Recipe
from alignmix.run import Stage, run_folder_lock


def _with_dependencies(stages: Iterable[Stage], name: str) -> list[Stage]:
    """`name` and every stage it depends on, transitively, in graph order."""
    stages = list(stages)
    by_name = {s.name: s for s in stages}
    wanted, pending = set(), [name]
    while pending:
        current = pending.pop()
        if current not in wanted:
            wanted.add(current)
            pending.extend(by_name[current].depends_on)
    return [s for s in stages if s.name in wanted]


def train(
    recipe_file: RecipeArg,
    stage: Annotated[str, typer.Option("--stage", help="A training stage of the recipe (e.g. pretrain), sft or dpo.")],
    overrides: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: runs/RECIPE_NAME).")] = None,
    launcher: Annotated[
        Literal["local", "slurm", "srun"],
        typer.Option("--launcher", help="local: run here; slurm: write (and submit) an sbatch script;"
                          " srun: inside an allocation, start training under srun.")
    ] = "local",
    nodes: NodesOpt = None,
    gpus_per_node: GpusPerNodeOpt = None,
    partition: PartitionOpt = None,
    time_limit: TimeOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --launcher slurm: print the script only.")] = False,
    cpus_per_task: CpusPerTaskOpt = 8,
    wait: Annotated[bool, typer.Option("--wait", help="With --launcher slurm: block until the job ends (sbatch --wait)"
                                                      " and exit with its status.")] = False,
    from_step: Annotated[str | None, typer.Option(
        "--from-step", help="A streamed pretraining stage whose mixture changed: keep the samples its step checkpoint N"
                            " (or 'last') had read, re-plan the rest, and continue training from that checkpoint.")
    ] = None,
) -> None:
    """Run one training stage (reusing or running what it depends on); interrupted, it resumes when rerun."""
    recipe = load_recipe_or_fail(recipe_file, overrides)
    from alignmix.graph import build_graph
    from alignmix.train.launch import launch_for

    try:
        trainable = [model.name for model in build_graph(recipe, recipe_file.parent).models]
    except AlignmixError as exc:
        fail(str(exc))
    if stage == "base" and recipe.base_model is not None:
        fail(f"--stage base: the base model's conversion is not a training stage (`alignmix run` converts it); to"
             f" get {recipe.base_model.path} as a transformers folder: alignmix export {recipe.base_model.path} --hf DIR")
    if stage not in trainable:
        fail(f"--stage: '{stage}' is not a training stage of {recipe_file}; expected one of: {', '.join(trainable)}")
    run_dir = out or Path("runs") / recipe.name
    if from_step is not None and not dry_run:  # kept in the run folder, where a Slurm job's `train` finds it too
        _keep_for_continuation(recipe, run_dir, stage, from_step)
    if launcher == "slurm":
        _slurm(recipe_file, overrides or [], stage, run_dir, nodes, gpus_per_node, partition, time_limit, dry_run, wait,
               cpus_per_task)
        return
    if dry_run:
        fail("--dry-run applies to --launcher slurm")
    launch = launch_for(launcher, nodes, gpus_per_node)
    manifest = run_recipe(recipe, recipe_file, run_dir, launch, lambda stages: _with_dependencies(stages, stage))
    record = next(s for s in manifest["stages"] if s["name"] == stage)
    console.print(f"{stage}: {record['status']}; model: {ModelOutput(run_dir / stage).final}")


def _keep_for_continuation(recipe: Recipe, run_dir: Path, stage: str, from_step: str) -> None:
    from alignmix.train.continuation import keep_for_continuation

    if stage not in [s.name for s in recipe.stages]:
        fail(f"--from-step: '{stage}' is not a pretraining stage; a mid-run change re-plans a stage's mixture")
    if recipe.mixing.delivery != "stream":
        fail("--from-step: a mid-run change needs mixing.delivery: stream (with chunks, LitData's shuffled order hides"
             " which samples training read)")
    try:
        with run_folder_lock(run_dir):
            keep_for_continuation(run_dir, stage, from_step, lambda line: console.print(line, highlight=False))
    except AlignmixError as exc:
        fail(str(exc))


def _slurm(recipe_file: Path, overrides: list[str], stage: str, run_dir: Path, nodes: int | None, gpus_per_node: int | None,
           partition: str | None, time_limit: str | None, dry_run: bool, wait: bool, cpus_per_task: int) -> None:
    from alignmix.train.slurm import (
        SlurmResources,
        sbatch_available,
        sbatch_script,
        submit,
        training_command,
        write_script,
    )

    if nodes is None or gpus_per_node is None:
        fail("--launcher slurm needs --nodes N and --gpus-per-node G")
    resources = SlurmResources(nodes, gpus_per_node, cpus_per_task, partition, time_limit)
    log_dir = run_dir / "logs"
    script = sbatch_script(stage, training_command(recipe_file, stage, run_dir, resources, overrides), resources, log_dir,
                           Path.cwd())
    if dry_run:
        print(script, end="")
        return
    path = write_script(run_dir / "slurm" / f"{stage}.sbatch", script, log_dir)
    if not sbatch_available():
        console.print(f"wrote {path}; sbatch is not on PATH here: submit it with `sbatch {path}` on the cluster")
        return
    result = submit(path, wait)
    if result.returncode != 0:
        fail(f"sbatch {path} failed ({'the job ended with status ' + str(result.returncode) if wait else 'not submitted'}):"
             f" {result.stderr.strip() or result.stdout.strip()} (job log: {log_dir})")
    console.print(f"wrote {path}; {result.stdout.strip()}" + ("; the job finished" if wait else ""))


def export(
    model: Annotated[str, typer.Argument(help="A litgpt checkpoint folder (e.g. runs/tiny/dpo/final), or a model as a recipe's base_model names one: builtin:SmolLM2-135M-Instruct, a .gguf file, a transformers folder.")],
    hf: Annotated[Path, typer.Option("--hf", help="Output folder for the transformers checkpoint.")],
) -> None:
    """Export a model as a transformers checkpoint with its tokenizer and chat template: a litgpt checkpoint (GPT-NeoX, Llama, or any architecture litgpt converts back) converted, a GGUF file (a builtin's too) de-quantised, a transformers folder copied."""
    import shutil

    from alignmix.checkpoints.convert import ConversionError
    from alignmix.checkpoints.export import ExportError, export_hf
    from alignmix.checkpoints.released import model_folder

    try:
        folder, kind = model_folder(model, "MODEL", lambda text: console.print(text, highlight=False))
        if kind == "litgpt":
            out = export_hf(folder, hf)
        else:
            out = Path(shutil.copytree(folder, hf, dirs_exist_ok=True))
    except (ExportError, ConversionError) as exc:
        fail(str(exc))
    console.print(f"transformers checkpoint: {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `train` and `export` to the `alignmix` app."""
    app.command("train")(train)
    app.command("export")(export)
