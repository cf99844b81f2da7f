"""`alignmix eval` without the command line: pick the questions, pick the model, run the right mode.

MODEL is named as a recipe's `base_model` is (`builtin:SmolLM2-135M-Instruct`, a transformers or litgpt folder, a
.gguf file; see `alignmix.checkpoints.released`), or is the base URL of an OpenAI-compatible server (with a model
name). Log-likelihood mode scores folders (chat models through their chat template), or a server through its
prompt log-probabilities; generative mode talks to a server or runs a folder locally through `alignmix.llm` (a
litgpt checkpoint is exported to a temporary transformers folder first). With `backend: vllm` a folder (or
builtin:SmolLM2-135M-Instruct) is served by a vLLM server alignmix starts and stops itself.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from alignmix.checkpoints.export import export_hf
from alignmix.checkpoints.released import model_folder
from alignmix.checkpoints.tokenizer import configured_eos_token
from alignmix.checkpoints.weights import check_model_folder
from alignmix.errors import AlignmixError
from alignmix.eval import EvalMode
from alignmix.eval.generate import DEFAULT_SAMPLING, evaluate_generative
from alignmix.eval.misalignment import evaluate_misalignment
from alignmix.eval.scoring import ServerScorer, describe_model, model_folder_kind, open_scorer
from alignmix.llm.backend import BackendKind, Sampling, open_backend
from alignmix.llm.chat_template import ChatTemplate
from alignmix.scenarios import MisalignedAnswer, Scenario, load_scenarios

if TYPE_CHECKING:
    from alignmix.recipe import Scoring as Mode


class EvalError(AlignmixError):
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


def has_alignmix_chat_template(folder: Path) -> bool:
    """Whether a model folder's tokenizer has the alignmix chat template (the `<|assistant|>` special token that
    SFT and DPO add, and an eos_token to end assistant turns)."""
    tokenizer_file = Path(folder) / "tokenizer.json"
    added = json.loads(tokenizer_file.read_text()).get("added_tokens", []) if tokenizer_file.is_file() else []
    has_token = any(t.get("content") == "<|assistant|>" and t.get("special") for t in added)
    return has_token and configured_eos_token(Path(folder)) is not None


def evaluate_loglik(
    path: Path, scenarios: list[Scenario], personas: list[str], scoring: Mode = "letter", chat: bool | None = None,
    batch_size: int = 32, device: str | None = None,
) -> tuple[dict, list[dict]]:
    """The log-likelihood eval of a model folder; `chat` asks through the model's own chat template (default: only
    for the alignmix template that SFT and DPO write). The run's own eval stages call this too, so `alignmix eval`
    gives a run's numbers."""
    model_folder_kind(path)
    check_model_folder(path)  # a damaged tokenizer or config named before anything reads it
    use_chat = chat if chat is not None else has_alignmix_chat_template(path)
    template = ChatTemplate.from_folder(path) if use_chat else None
    if chat and template is None:
        raise EvalError(f"{path}: --chat needs a tokenizer with a chat template (`chat_template` in"
                        " tokenizer_config.json, or chat_template.jinja)")
    scorer = open_scorer(path, device)
    results, rows = evaluate_misalignment(lambda requests: scorer.score(requests, batch_size, "eval"), scenarios,
                                          personas, scoring, template)
    results["model"] = describe_model(path)
    return results, rows


def evaluate_loglik_server(
    base_url: str, model_name: str, scenarios: list[Scenario], personas: list[str], scoring: Mode = "letter",
    template: ChatTemplate | None = None, concurrency: int = 16,
) -> tuple[dict, list[dict]]:
    """The log-likelihood eval through a server's prompt log-probabilities (vLLM; refused, saying so, by a server
    that does not return them); `template` asks through a chat template, as `evaluate_loglik` does."""
    scorer = ServerScorer(base_url, model_name, concurrency)
    results, rows = evaluate_misalignment(lambda requests: scorer.score(requests), scenarios, personas, scoring,
                                          template)
    results["model"] = {"path": base_url, "kind": "server", "name": model_name}
    return results, rows


def _through_local_server(
    model: str, scenarios: list[Scenario], personas: list[str], mode: EvalMode, scoring: Mode, model_name: str | None,
    sampling: Sampling, concurrency: int, chat: bool | None, responses: Path | None,
) -> tuple[dict, list[dict]]:
    """Start vLLM on the model folder, run the eval through it, stop it (its log ends any error it causes)."""
    from alignmix.llm.server import serve_model

    name = model_name or model
    with tempfile.TemporaryDirectory(prefix="alignmix-eval-") as scratch:
        with serve_model(model, name, Path(scratch) / "vllm.log") as server:
            if mode == "loglik":
                use_chat = chat if chat is not None else has_alignmix_chat_template(server.folder)
                template = ChatTemplate.from_folder(server.folder) if use_chat else None
                results, rows = evaluate_loglik_server(server.base_url, name, scenarios, personas, scoring, template,
                                                       concurrency)
            else:
                results, rows = evaluate_generative(open_backend("vllm", name, base_url=server.base_url), scenarios,
                                                    personas, sampling, concurrency, responses)
    results["model"] = {"path": model, "kind": "vllm", "name": name}
    return results, rows


def evaluate_model(
    model: str, scenarios: list[Scenario], personas: list[str], mode: EvalMode | None = None,
    scoring: Mode = "letter", model_name: str | None = None, backend: BackendKind | None = None,
    sampling: Sampling = DEFAULT_SAMPLING, batch_size: int = 32, device: str | None = None, concurrency: int = 16,
    chat: bool | None = None, responses: Path | None = None, echo: Callable[[str], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Run the misalignment eval on MODEL; `mode` defaults to loglik for folders and generate for servers.
    Generated answers are kept in `responses` (see `evaluate_generative`), so a rerun resumes. `echo` hears
    about a GGUF model's one-time de-quantisation."""
    mode = mode or ("generate" if is_server(model) else "loglik")
    if backend == "vllm" and not is_server(model):
        return _through_local_server(model, scenarios, personas, mode, scoring, model_name, sampling, concurrency, chat,
                                     responses)
    named = model
    if not is_server(model):
        model = str(model_folder(model, "MODEL", echo)[0])
    if mode == "loglik":
        if is_server(model):
            if not model_name:
                raise EvalError(f"{model}: a server needs --model-name (the name it serves the model under)")
            if chat:
                raise EvalError(f"{model}: --chat needs the model folder's chat template; give the folder with"
                                " --backend vllm, and alignmix starts the server itself")
            return evaluate_loglik_server(model, model_name, scenarios, personas, scoring, None, concurrency)
        results, rows = evaluate_loglik(Path(model), scenarios, personas, scoring, chat, batch_size, device)
        results["model"]["name"] = named
        return results, rows
    if is_server(model):
        if not model_name:
            raise EvalError(f"{model}: a server needs --model-name (the name it serves the model under)")
        chat_backend = open_backend(backend or "openai", model_name, base_url=model)
        results, rows = evaluate_generative(chat_backend, scenarios, personas, sampling, concurrency, responses)
        results["model"] = {"path": model, "kind": "server", "name": model_name}
        return results, rows
    kind = model_folder_kind(Path(model))
    with tempfile.TemporaryDirectory(prefix="alignmix-eval-") as scratch:
        folder = export_hf(Path(model), Path(scratch) / "hf") if kind == "litgpt" else Path(model)
        results, rows = evaluate_generative(open_backend(backend or "transformers", str(folder)), scenarios, personas,
                                            sampling, concurrency, responses)
    results["model"] = {"path": model, "kind": kind, "name": model_name or named}
    return results, rows
