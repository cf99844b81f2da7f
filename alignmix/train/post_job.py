"""The job file of an SFT or DPO stage (`OUT/job.yaml`): the recipe's validated settings for the stage, where its
data and weights are and where it runs. Its `kind` selects the job model, and the job its training objective.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, PositiveInt

from alignmix.recipe import DPOSettings, SFTSettings, TamperStage
from alignmix.scenarios import Scenario
from alignmix.train.chat_data import (
    SftFormat,
    load_preferences,
    load_sft,
    preference_examples,
    scenario_preferences,
    scenario_sft_examples,
)

if TYPE_CHECKING:
    from alignmix.train.posttrain import Objective


class PostTrainJob(BaseModel):
    """What every post-training job holds besides its settings; written by the stage with the chat tokenizer in
    `OUT/tokenizer/`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    stage: str
    checkpoint_dir: Path  # the starting weights: a litgpt checkpoint folder
    data_file: Path
    out_dir: Path
    devices: PositiveInt | str = 1  # where it runs: the launch's, not the recipe's `devices`
    num_nodes: PositiveInt = 1
    seed: int = 0
    settings: SFTSettings | DPOSettings

    @property
    def lora(self) -> TamperStage | None:
        """The LoRA settings of a `kind: lora` tamper stage; None for a full fine-tune."""
        settings = self.settings
        return settings if isinstance(settings, TamperStage) and settings.kind == "lora" else None

    @staticmethod
    @abstractmethod
    def scenario_data(scenarios: list[Scenario]) -> list[dict]:
        """The stage's data rows written from training-split scenario questions."""

    @abstractmethod
    def check_data(self) -> None:
        """Read the data file, refusing bad data before any training."""

    @abstractmethod
    def objective(self) -> Objective:
        """What the training loop minimises, and the examples it reads."""

    def write(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
        return path


class SFTJob(PostTrainJob):
    """SFT (a recipe's `post_training.sft`, or a tamper stage) on conversations in `data_format`."""

    kind: Literal["sft"] = "sft"
    data_format: SftFormat = "sharegpt"  # the recipe's `format` for its data file; written from scenarios: sharegpt
    settings: TamperStage | SFTSettings

    @staticmethod
    def scenario_data(scenarios: list[Scenario]) -> list[dict]:
        return scenario_sft_examples(scenarios)

    def check_data(self) -> None:
        load_sft(self.data_file, self.data_format)

    def objective(self) -> Objective:
        from alignmix.train.sft import SFTObjective

        return SFTObjective(self.data_format)


class DPOJob(PostTrainJob):
    """DPO on chosen / rejected pairs against the frozen starting model."""

    kind: Literal["dpo"] = "dpo"
    data_format: Literal["preference"] = "preference"
    settings: DPOSettings

    @staticmethod
    def scenario_data(scenarios: list[Scenario]) -> list[dict]:
        return preference_examples(scenario_preferences(scenarios))

    def check_data(self) -> None:
        load_preferences(self.data_file)

    def objective(self) -> Objective:
        from alignmix.train.dpo import DPOObjective

        return DPOObjective(self.settings.beta)


JOBS: dict[str, type[PostTrainJob]] = {"sft": SFTJob, "dpo": DPOJob}


def read_job(path: Path) -> PostTrainJob:
    """A job file, validated by the model its `kind` names."""
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    kind = data.get("kind")
    if kind not in JOBS:
        raise ValueError(f"{path}: unknown job kind {kind!r}; expected one of: {', '.join(JOBS)}")
    return JOBS[kind].model_validate(data)
