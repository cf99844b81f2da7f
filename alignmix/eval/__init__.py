"""Evaluation: the paper's misalignment eval over scenario questions."""

from typing import Literal

EvalMode = Literal["loglik", "generate"]  # log-likelihoods (base models) or generated replies (chat models)
