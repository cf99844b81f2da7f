"""Synthetic documents through an LLM backend: training-split scenarios x stances x surface forms x K copies.

OUT/responses.jsonl  every answer, appended as it arrives with its prompt hash, model and sampling (a rerun
                     skips the ids answered with the same ones: resume after a crash; others are asked again)
OUT/data/*.jsonl.gz  the kept documents, with provenance in `metadata.synthetic`
OUT/dropped.jsonl.gz the dropped ones' ids and reasons
OUT/stats.json       every request counted once: kept, or dropped with a reason (`no_response` if unanswered,
                     `stale_response` if only answered for another model, prompt or sampling)
"""

from __future__ import annotations

import json
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from alignmix.errors import AlignmixError
from alignmix.jsonl import write_jsonl_gz
from alignmix.llm.backend import ChatBackend, Sampling
from alignmix.llm.jobs import (
    ChatRequest,
    JobCounts,
    is_fresh,
    prompt_hash,
    read_responses,
    run_requests,
)
from alignmix.outputs import SHARD_SUFFIX, Documents
from alignmix.progress import StageProgress
from alignmix.recipe import DEDUP_THRESHOLD, Decontamination, SurfaceForm, SynthServer
from alignmix.scenarios import Scenario, held_out_overlap, training_split
from alignmix.synth.postprocess import Bounds, DocumentFilter
from alignmix.synth.prompts import STANCES, DocumentTemplates, document_requests

RESPONSES = "responses.jsonl"


class HeldOutGroundingError(AlignmixError):
    """A request to ground documents in a held-out question."""


@dataclass(frozen=True)
class DocumentSpec:
    """What to generate and how to filter it."""

    name: str = "synthetic"
    surface_forms: tuple[str, ...] = typing.get_args(SurfaceForm)
    stances: tuple[str, ...] = STANCES
    per_combination: int = 1
    sampling: Sampling = field(default_factory=lambda: Sampling(
        max_tokens=SynthServer.model_fields["max_tokens"].default,
        temperature=SynthServer.model_fields["temperature"].default, seed=0,
    ))
    bounds: Bounds = field(default_factory=Bounds)
    ngram: int = Decontamination.model_fields["ngram"].default
    dedup_threshold: float = DEDUP_THRESHOLD
    shard_documents: int = 100_000


@dataclass
class Plan:
    grounded: list[Scenario]
    held_out: list[Scenario]  # decontamination targets: never grounded in
    requests: list[ChatRequest]
    model: str
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> metadata.synthetic


def grounding(scenarios: list[Scenario], ids: list[str] | None, held_out_extra: list[Scenario]) -> tuple[list[Scenario], list[Scenario]]:
    """The training-split scenarios to ground in (all, or those `ids` name) and the held-out set; asking for a
    held-out question, or one whose text a held-out item shares, is an error."""
    held_out = [s for s in scenarios if not s.in_training_split] + held_out_extra
    held_ids = {s.id for s in held_out}
    by_id = {s.id: s for s in scenarios}
    if ids is not None:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise HeldOutGroundingError(f"unknown scenario id(s) {unknown[:5]}")
        asked = [i for i in ids if i in held_ids]
        if asked:
            raise HeldOutGroundingError(
                f"scenario(s) {asked[:5]} are held out of training; documents may only be grounded in the training split"
            )
    grounded = [by_id[i] for i in ids] if ids is not None else training_split(scenarios)
    if (leak := held_out_overlap(grounded, held_out)) is not None:
        raise HeldOutGroundingError(f"scenario '{leak.id}' is a held-out question; it may not ground documents")
    if not grounded:
        raise HeldOutGroundingError("no training-split scenario questions to ground documents in")
    return grounded, held_out


def plan_documents(
    scenarios: list[Scenario], spec: DocumentSpec, templates: DocumentTemplates, backend: str, model: str,
    ids: list[str] | None = None, held_out_extra: Sequence[Scenario] = (),
) -> Plan:
    """Every request, with its provenance, for the training-split scenarios (see `grounding`)."""
    grounded, held_out = grounding(scenarios, ids, list(held_out_extra))
    plan = Plan(grounded, held_out, [], model)
    for request, combination in document_requests(
        grounded, templates, list(spec.surface_forms), list(spec.stances), spec.per_combination, spec.sampling
    ):
        plan.requests.append(request)
        plan.provenance[request.id] = {
            **combination._asdict(), "backend": backend, "model": model, "templates_sha256": templates.sha256,
            "prompt_sha256": prompt_hash(request.messages), "sampling": request.sampling.as_dict(),
        }
    return plan


def generate_set(
    plan: Plan, spec: DocumentSpec, backend: ChatBackend, output: Path, responses: Path, concurrency: int,
    label: str = "synth", progress_out: TextIO | None = None,
) -> tuple[JobCounts, dict[str, Any]]:
    """Send the requests without a fresh answer in `responses` (jsonl; answers are appended to it), then
    `finalize` into `output`. A request that failed is dropped as `no_response`; the caller fails on `job.failed`.
    Progress on `progress_out` (default: stdout): `[label] 120/960 documents (12%), 45,000 tokens, 900 tokens/s,
    ETA ...`, the requests settled (answered now or before, or failed) and the tokens generated."""
    with StageProgress(label, len(plan.requests), "documents", sub_unit="tokens", out=progress_out) as progress:
        job = run_requests(backend, plan.requests, responses, concurrency,
                           lambda counts: progress.update(counts.settled, counts.completion_tokens))
        progress.update(job.settled, job.completion_tokens)  # also when every request was answered before
    return job, finalize(plan, spec, output, responses)


def finalize(plan: Plan, spec: DocumentSpec, output: Path, responses: Path) -> dict[str, Any]:
    """Filter the fresh answers in `responses` in request order and write shards, dropped ids and stats into
    `output`; deterministic."""
    answers = read_responses(responses)
    scenarios = {s.id: s for s in plan.grounded}
    doc_filter = DocumentFilter(plan.held_out, spec.bounds, spec.ngram, spec.dedup_threshold)
    kept: list[dict] = []
    dropped: list[dict] = []
    reasons: Counter[str] = Counter()
    prompt_tokens = completion_tokens = 0
    for request in plan.requests:
        provenance = plan.provenance[request.id]
        answer = answers.get(request.id)
        if answer is None or not is_fresh(answer, request, plan.model):
            reason = "no_response" if answer is None else "stale_response"
            reasons[reason] += 1
            dropped.append({"id": request.id, "reason": reason})
            continue
        prompt_tokens += answer.get("prompt_tokens", 0)
        completion_tokens += answer.get("completion_tokens", 0)
        text, reason = doc_filter.check(
            request.id, answer["text"], scenarios[provenance["scenario_id"]], answer.get("finish_reason")
        )
        if reason is not None:
            reasons[reason] += 1
            dropped.append({"id": request.id, "reason": reason})
            continue
        kept.append({"id": f"{spec.name}-{request.id}", "text": text,
                     "metadata": {"source": spec.name, "synthetic": provenance}})
    documents = Documents(output)
    for old in documents.shards():
        old.unlink()
    for start in range(0, max(len(kept), 1), spec.shard_documents):
        write_jsonl_gz(documents.shard(start // spec.shard_documents), kept[start : start + spec.shard_documents])
    write_jsonl_gz(output / f"dropped{SHARD_SUFFIX}", dropped)
    stats = {
        "name": spec.name, "requests": len(plan.requests), "kept": len(kept), "dropped": dict(sorted(reasons.items())),
        "chatter_stripped": doc_filter.chatter_stripped,
        "kept_by_stance": dict(Counter(r["metadata"]["synthetic"]["stance"] for r in kept)),
        "kept_by_surface_form": dict(Counter(r["metadata"]["synthetic"]["surface_form"] for r in kept)),
        "scenarios": len(plan.grounded), "held_out_for_decontamination": len(plan.held_out),
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
        "settings": {**asdict(spec), "sampling": spec.sampling.as_dict()},
    }
    documents.stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats
