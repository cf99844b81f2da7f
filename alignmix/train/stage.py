"""The training stages' wiring: the base model, pretraining stages and post-training, with the checks on their
models that run before any work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from alignmix.code_version import code_of
from alignmix.hashing import files_identity
from alignmix.outputs import Continuation, ModelOutput
from alignmix.recipe import POST_TRAINING, ModelSpec, Recipe, RecipeError, TrainingStage, key_settings
from alignmix.run import Stage, StageContext
from alignmix.scenarios import training_split
from alignmix.scenarios.recipe_sets import recipe_scenarios, scenario_files_identity
from alignmix.train.launch import Launch


def base_stage(recipe: Recipe) -> Stage | None:
    """The released model the run continues, converted once into a litgpt checkpoint folder `base/`."""
    base = recipe.base_model
    if base is None:
        return None

    def action(ctx: StageContext) -> dict[str, Any]:
        from alignmix.checkpoints.base import install_base

        with ctx.stderr_to_log():  # the ticking lines go to stdout, the console
            info = install_base(base.path, base.name, ctx.output)
        ctx.echo(f"  {info['kind']} model {info['source']} as litgpt '{info['litgpt_name']}'")
        return info

    from alignmix.checkpoints.base import resolve_base_path
    from alignmix.checkpoints.convert import ConversionError

    try:
        files = files_identity([resolve_base_path(base.path)])
    except ConversionError as exc:
        raise RecipeError(str(exc)) from None
    settings = {**base.model_dump(mode="json"), "files": files}
    return Stage("base", Path("base"), settings, action, code=code_of("base"), kind="base")


def with_base_architecture(recipe: Recipe) -> list[TrainingStage]:
    """The recipe's training stages, each `train.model` defaulting to the base model's architecture; a stage whose
    model differs from the base's is refused, naming the fields."""
    if recipe.base_model is None:
        return list(recipe.stages)
    from alignmix.checkpoints.base import architecture_differences, base_model_config
    from alignmix.checkpoints.convert import ConversionError
    from alignmix.train.litgpt_config import model_config, validate_model_spec

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
            validate_model_spec(stage.train.model, f"stages.{index}.train.model")
            differences = architecture_differences(model_config(stage.train.model), base)
            if differences:
                raise RecipeError(f"stages.{index}.train.model differs from the base model '{base['name']}':"
                                  f" {', '.join(differences[:5])}; leave it out to train the base's architecture")
        stages.append(stage.model_copy(update={"train": stage.train.model_copy(update={"model": ModelSpec(config=base)})}))
    return stages


def check_contexts(recipe: Recipe, stages: list[TrainingStage]) -> None:
    """Refuse, before any work (in `plan` too), an unknown model, a training stage whose seq_len exceeds its
    model's block_size, or a post-training `max_seq_length` above the last trained model's."""
    from alignmix.train.litgpt_config import check_context, model_config, validate_model_spec

    config = None
    for index, stage in enumerate(stages):
        if stage.train is not None and stage.train.model is not None:
            validate_model_spec(stage.train.model, f"stages.{index}.train.model")
            config = model_config(stage.train.model)
            check_context(stage, config)
    if recipe.post_training is None or config is None:
        return
    for kind in POST_TRAINING:
        settings = getattr(recipe.post_training, kind)
        if settings is not None and settings.max_seq_length > config["block_size"]:
            raise RecipeError(f"post_training.{kind}.max_seq_length {settings.max_seq_length:,} exceeds the block_size"
                              f" of model '{config['name']}' ({config['block_size']:,}); lower max_seq_length")


def training_stages(recipe: Recipe, launch: Launch,
                    continuations: dict[str, Continuation] | None = None) -> list[Stage]:
    """One stage per training stage of the recipe; one in `continuations` (its mixture changed mid-run) resumes from
    the earlier run's step checkpoint, which its key names."""
    stages: list[Stage] = []
    previous: str | None = "base" if recipe.base_model is not None else None
    training_stages = with_base_architecture(recipe)
    check_contexts(recipe, training_stages)
    for training_stage in training_stages:
        if training_stage.train is None:
            continue

        continued = (continuations or {}).get(training_stage.name)

        def action(ctx: StageContext, training_stage=training_stage, previous=previous,
                   continued=continued) -> dict[str, Any]:
            from alignmix.checkpoints.base import tied_embeddings
            from alignmix.checkpoints.tokenizer import load_tokenizer
            from alignmix.train.exposure import write_exposure
            from alignmix.train.litgpt_config import StageFiles
            from alignmix.train.pretrain import run_pretrain

            tokenizer, _ = load_tokenizer(ctx.inputs["tokenizer"])
            if previous is None:
                start = None
            else:  # the converted base folder itself, or an earlier stage's final weights
                start = ctx.inputs[previous] if previous == "base" else ModelOutput(ctx.inputs[previous]).final
            files = StageFiles(
                data_dir=ctx.inputs[f"mix/{training_stage.name}"], tokenizer_dir=ctx.inputs["tokenizer"],
                out_dir=ctx.output, vocab_size=tokenizer.get_vocab_size(), initial_checkpoint_dir=start,
                tied_embeddings=start is not None and tied_embeddings(start), delivery=recipe.mixing.delivery,
            )
            if continued is not None and not any(ctx.output.glob("step-*")):
                step = ctx.output / f"step-{continued.record['from_step']:08d}"
                shutil.copytree(continued.step, step, copy_function=os.link)
                ctx.echo(f"  continuing from {step.name} of the earlier mixture, on the changed one")
            counts = run_pretrain(training_stage, files, recipe.seed, ctx.log_file, launch, ctx.echo)
            seen = write_exposure(ctx.output, files.data_dir, training_stage.seq_len)
            if seen is not None:
                counts["exposure"] = {k: seen[k] for k in ("samples_written", "samples_seen", "passes", "exact",
                                                           "warning")}
                if seen["warning"]:
                    ctx.echo(f"warning: stage '{training_stage.name}': {seen['warning']}")
            return counts

        settings = {"seed": recipe.seed, "stage": key_settings(training_stage, "train"),
                    "delivery": recipe.mixing.delivery}
        if continued is not None:
            settings["continues"] = {**continued.record, **continued.digest()}
        depends = (f"mix/{training_stage.name}", "tokenizer") + ((previous,) if previous else ())
        stages.append(Stage(training_stage.name, Path(training_stage.name), settings, action, depends, code_of("train"),
                            kind="model"))
        previous = training_stage.name
    return stages


def post_training_stages(recipe: Recipe, last_pretraining_stage: str, base_dir: Path, launch: Launch) -> list[Stage]:
    """SFT then DPO, each starting from the previous stage's `final/` weights (SFT from the last pretraining stage's)."""
    stages: list[Stage] = []
    previous = last_pretraining_stage
    for kind in POST_TRAINING:
        settings_model = getattr(recipe.post_training, kind) if recipe.post_training else None
        if settings_model is None:
            continue

        def action(ctx: StageContext, kind=kind, settings_model=settings_model, previous=previous) -> dict[str, Any]:
            from alignmix.train.post_stage import run_post_training

            spec = settings_model.from_scenarios
            scenarios = training_split(recipe_scenarios(recipe, spec, base_dir)) if spec else []
            return run_post_training(
                kind, settings_model, ModelOutput(ctx.inputs[previous]).final, ctx.output, recipe.seed, scenarios,
                ctx.log_file, launch,
            )

        settings: dict[str, Any] = {"seed": recipe.seed, kind: key_settings(settings_model, kind)}
        if settings_model.data is not None:
            settings["data_file"] = files_identity([settings_model.data])
        else:
            settings["scenario_files"] = scenario_files_identity(settings_model.from_scenarios, base_dir)
        stages.append(Stage(kind, Path(kind), settings, action, (previous,), code_of("post_train"), kind="model"))
        previous = kind
    return stages


def tamper_stages(recipe: Recipe, model_stages: list[str], launch: Launch) -> list[Stage]:
    """The recipe's `tamper:` fine-tunes, each from a model stage (or an earlier tamper stage) to `NAME/final/`."""
    stages: list[Stage] = []
    known = list(model_stages)
    for index, tamper in enumerate(recipe.tamper):
        if tamper.from_stage not in known:
            raise RecipeError(f"key 'tamper.{index}.from': '{tamper.from_stage}' is not a model stage of this recipe;"
                              f" expected one of: {', '.join(known)}")

        def action(ctx: StageContext, tamper=tamper) -> dict[str, Any]:
            from alignmix.train.post_stage import run_post_training

            start = ModelOutput(ctx.inputs[tamper.from_stage]).final
            return run_post_training("sft", tamper, start, ctx.output, recipe.seed, [], ctx.log_file, launch)

        settings = {"seed": recipe.seed, "tamper": key_settings(tamper, "tamper"),
                    "data_file": files_identity([tamper.data])}
        stages.append(Stage(tamper.name, Path(tamper.name), settings, action, (tamper.from_stage,),
                            code_of("post_train"), kind="model"))
        known.append(tamper.name)
    return stages
