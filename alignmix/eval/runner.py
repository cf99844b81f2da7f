"""`alignmix eval` without the command line: pick the questions, pick the model, run the right mode.

MODEL is a litgpt checkpoint folder, a transformers folder, or the base URL of an OpenAI-compatible server
(with a model name). Log-likelihood mode scores folders; generative mode talks to a server or runs a
transformers folder locally through `alignmix.llm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alignmix.eval.generate import DEFAULT_SAMPLING, evaluate_generative
from alignmix.eval.misalignment import Mode, evaluate_misalignment
from alignmix.eval.scoring import describe_model, open_scorer
from alignmix.llm.backend import BackendKind, Sampling, open_backend
from alignmix.scenarios import MisalignedAnswer, Scenario, load_scenarios

EvalMode = Literal["loglik", "generate"]


class EvalError(ValueError):
    """A model or dataset the eval cannot use, with what was expected."""


def load_dataset(
    spec: str, misaligned_answer: MisalignedAnswer | None = None, split: str | None = None, limit: int | None = None,
) -> tuple[list[Scenario], list[str]]:
    """Questions from one or more comma-separated specs (`builtin:NAME` or files in any of the three formats).

    Returns (scenarios, skipped items as `file:line: reason`). `split` keeps one split; `limit` keeps the first
    N questions of each file."""
    scenarios: list[Scenario] = []
    skipped: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        loaded = load_scenarios(part, misaligned_answer=misaligned_answer, skipped=skipped)
        if split is not None:
            loaded = [s for s in loaded if s.split == split]
        scenarios += loaded[:limit] if limit is not None else loaded
    if not scenarios:
        raise EvalError(f"no questions in {spec}" + (f" with split '{split}'" if split else ""))
    ids = [s.id for s in scenarios]
    if len(set(ids)) != len(ids):
        raise EvalError(f"{spec}: question ids repeat across files; each id must be unique")
    return scenarios, skipped


def is_server(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def evaluate_model(
    model: str, scenarios: list[Scenario], personas: list[str], mode: EvalMode | None = None,
    scoring: Mode = "letter", model_name: str | None = None, backend: BackendKind | None = None,
    sampling: Sampling = DEFAULT_SAMPLING, batch_size: int = 32, device: str | None = None, concurrency: int = 16,
) -> tuple[dict, list[dict]]:
    """Run the misalignment eval on MODEL; `mode` defaults to loglik for folders and generate for servers."""
    mode = mode or ("generate" if is_server(model) else "loglik")
    if mode == "loglik":
        if is_server(model):
            raise EvalError(f"{model}: log-likelihood mode needs a model folder; use --mode generate for a server")
        path = Path(model)
        scorer = open_scorer(path, device)
        results, rows = evaluate_misalignment(
            lambda requests: scorer.score(requests, batch_size), scenarios, personas, scoring)
        results["model"] = describe_model(path)
        return results, rows
    if is_server(model):
        if not model_name:
            raise EvalError(f"{model}: a server needs --model-name (the name it serves the model under)")
        chat_backend = open_backend(backend or "openai", model_name, base_url=model)
    else:
        if not (Path(model) / "config.json").is_file():
            raise EvalError(f"{model}: generative mode runs a transformers folder (config.json) or a server URL;"
                            " export a litgpt checkpoint first")
        chat_backend = open_backend(backend or "transformers", model)
    results, rows = evaluate_generative(chat_backend, scenarios, personas, sampling, concurrency)
    results["model"] = {"path": model, "kind": "server" if is_server(model) else "hf", "name": model_name or model}
    return results, rows
