"""OpenAI Batch API files: requests out, results back in as the same rows `jobs.run_requests` writes.

A request line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`; a result line is
`{"id", "custom_id", "response": {"status_code", "request_id", "body": {chat completion}}, "error"}`. Files hold
at most `per_file` requests (the API takes 50,000 per file).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alignmix.jsonl import JsonLinesError, iter_json_lines
from alignmix.llm.backend import BackendError
from alignmix.llm.jobs import ChatRequest, fresh_answers, stamp
from alignmix.llm.openai_compat import request_body

CHAT_URL = "/v1/chat/completions"


def batch_line(request: ChatRequest, model: str) -> dict:
    body = {**request_body(model, request.sampling, request.extra), "messages": request.messages}
    return {"custom_id": request.id, "method": "POST", "url": CHAT_URL, "body": body}


def export_batch(
    requests: Iterable[ChatRequest], folder: Path, model: str, skip: set[str] = frozenset(), per_file: int = 50_000
) -> list[Path]:
    """Write the requests whose ids are not in `skip` as numbered batch request files; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("requests-*.jsonl"):
        old.unlink()
    paths: list[Path] = []
    handle = None
    written = 0
    for request in requests:
        if request.id in skip:
            continue
        if written % per_file == 0:
            if handle is not None:
                handle.close()
            paths.append(folder / f"requests-{len(paths):05d}.jsonl")
            handle = paths[-1].open("w", encoding="utf-8")
        handle.write(json.dumps(batch_line(request, model), ensure_ascii=False) + "\n")  # type: ignore[union-attr]
        written += 1
    if handle is not None:
        handle.close()
    return paths


@dataclass
class ImportCounts:
    imported: int = 0
    already_present: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # results that carry no completion, by reason


def import_batch_results(
    results: list[Path], responses: Path, requests: list[ChatRequest], model: str
) -> ImportCounts:
    """Append the completions in batch result files to `responses`, stamped as answers to `requests` from
    `model` (the requests exported); ids with a fresh answer already there are skipped."""
    by_id = {r.id: r for r in requests}
    present = set(fresh_answers(requests, responses, model))
    counts = ImportCounts()
    responses.parent.mkdir(parents=True, exist_ok=True)
    with responses.open("a", encoding="utf-8") as sink:
        for path in results:
            try:
                for number, row in iter_json_lines(path):
                    answer = _answer(row, f"{path}:{number}", counts)
                    if answer is None:
                        continue
                    if answer["id"] not in by_id:
                        counts.errors["unknown_request"] = counts.errors.get("unknown_request", 0) + 1
                        continue
                    if answer["id"] in present:
                        counts.already_present += 1
                        continue
                    present.add(answer["id"])
                    answer.update(stamp(by_id[answer["id"]], model))
                    sink.write(json.dumps(answer, ensure_ascii=False) + "\n")
                    counts.imported += 1
            except JsonLinesError as exc:
                raise BackendError(str(exc)) from None
    return counts


def _answer(row: object, where: str, counts: ImportCounts) -> dict | None:
    if not isinstance(row, dict) or "custom_id" not in row:
        raise BackendError(f"{where}: not a batch result line (expected custom_id, response, error)")
    response = row.get("response") or {}
    reason = None
    if row.get("error"):
        reason = f"error: {(row['error'] or {}).get('code', 'unknown')}"
    elif response.get("status_code") != 200:
        reason = f"http_{response.get('status_code')}"
    if reason is None:
        try:
            body = response["body"]
            choice = body["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            reason = "no_completion"
    if reason is not None:
        counts.errors[reason] = counts.errors.get(reason, 0) + 1
        return None
    usage = body.get("usage") or {}
    return {
        "id": row["custom_id"], "text": text or "", "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0), "completion_tokens": int(usage.get("completion_tokens") or 0),
    }
