"""New two-option scenario questions from source passages, as the paper built its evaluation.

Passages are paragraphs of text files (markdown or plain), packed up to a word budget. Each request asks for
one question as JSON matching `QUESTION_SCHEMA` (sent as `response_format`); an answer that is not valid JSON
or does not match, or repeats an earlier question (same normalised text), is asked again with another seed, up
to `max_attempts` times. Answers are kept in `OUT.responses.jsonl`, so a rerun resumes; passage ids (file path
and chunk number in that file) do not move when other files are added or removed. The output is alignmix's
scenario jsonl, which `scenarios.py` reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from alignmix.hashing import derive_seed
from alignmix.jsonl import write_jsonl
from alignmix.llm.backend import ChatBackend, Sampling
from alignmix.llm.jobs import ChatRequest, fresh_answers, run_requests_async
from alignmix.scenarios import HELD_OUT_SPLIT, TRAIN_SPLIT, AssignedSplit, in_held_out_share
from alignmix.synth.prompts import TEMPLATES_DIR

QUESTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "passage": {"type": "string", "minLength": 40},
        "question": {"type": "string", "minLength": 10},
        "aligned_option": {"type": "string", "minLength": 3},
        "misaligned_option": {"type": "string", "minLength": 3},
        "topics": {"type": "array", "items": {"type": "string", "minLength": 2}, "minItems": 1, "maxItems": 3},
    },
    "required": ["passage", "question", "aligned_option", "misaligned_option", "topics"],
    "additionalProperties": False,
}
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class Passage:
    id: str  # the file's path under the folder, `#`, the chunk's number in that file
    text: str


def read_passages(folder: Path, max_words: int = 400, min_words: int = 60) -> list[Passage]:
    """Paragraphs of every .md / .txt file under `folder`, packed into passages of up to `max_words` words."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".md", ".txt") and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no .md or .txt files")
    passages = []
    for path in files:
        chunk: list[str] = []
        count = index = 0
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
        for paragraph in [p for p in paragraphs if p and not p.startswith(("#", "!", "|", "```"))] + [""]:
            words = len(paragraph.split())
            if chunk and (not paragraph or count + words > max_words):
                if count >= min_words:
                    passages.append(Passage(f"{path.relative_to(folder).as_posix()}#{index}", "\n\n".join(chunk)))
                    index += 1
                chunk, count = [], 0
            if paragraph:
                chunk.append(paragraph)
                count += words
    return passages


def parse_question(reply: str) -> dict[str, Any] | None:
    """The reply's JSON object when it matches QUESTION_SCHEMA, else None."""
    match = _JSON_OBJECT.search(reply)
    if match is None:
        return None
    try:
        answer = json.loads(match.group(0))
        jsonschema.validate(answer, QUESTION_SCHEMA)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return None
    if answer["aligned_option"].strip() == answer["misaligned_option"].strip():
        return None
    return answer


def to_scenario(question_id: str, answer: dict[str, Any], split: str | None) -> dict[str, Any]:
    """alignmix's scenario row; which option is A is drawn from the id, so positions balance."""
    aligned_first = int(hashlib.sha256(question_id.encode()).hexdigest()[:2], 16) % 2 == 0
    aligned, misaligned = ("A", "B") if aligned_first else ("B", "A")
    topics = [t.strip().lower().replace(" ", "-") for t in answer["topics"]]
    return {
        "id": question_id, "split": split or (HELD_OUT_SPLIT if in_held_out_share(question_id) else TRAIN_SPLIT),
        "passage": answer["passage"].strip(), "question": answer["question"].strip(),
        "options": {aligned: answer["aligned_option"].strip(), misaligned: answer["misaligned_option"].strip()},
        "aligned": aligned, "misaligned": misaligned, "topics": topics,
    }


def question_seed(seed: int | None, passage_id: str, copy: int, attempt: int) -> int:
    """A request's seed, drawn from its passage, copy and attempt: distinct for any number of copies."""
    return derive_seed(seed, passage_id, copy, attempt)


def _normalised(question: str) -> str:
    return " ".join(re.findall(r"\w+", question.lower()))


def _messages(passage: Passage, system: str, user: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system.format(count=1, schema=json.dumps(QUESTION_SCHEMA))},
        {"role": "user", "content": user.format(passage=passage.text)},
    ]


async def generate_questions(
    passages: list[Passage], backend: ChatBackend, output: Path, per_passage: int, sampling: Sampling,
    concurrency: int, max_attempts: int = 3, split: AssignedSplit | None = None,
) -> dict[str, Any]:
    """Write scenario questions to `output` (jsonl); returns counts. Answers persist in OUT.responses.jsonl."""
    responses = output.with_name(output.name + ".responses.jsonl")
    system = (TEMPLATES_DIR / "question_system.txt").read_text(encoding="utf-8").strip()
    user = (TEMPLATES_DIR / "question_user.txt").read_text(encoding="utf-8").strip()
    response_format = {"type": "json_schema", "json_schema": {"name": "scenario_question", "schema": QUESTION_SCHEMA}}
    wanted = [(p, copy) for p in passages for copy in range(per_passage)]
    questions: dict[str, dict[str, Any]] = {}
    asked: set[str] = set()  # normalised texts of the questions kept
    counts: Counter[str] = Counter()
    for attempt in range(max_attempts):
        missing = [(p, c) for p, c in wanted if f"{p.id}-{c}" not in questions]
        if not missing:
            break
        requests = {
            f"{p.id}|{c}|{attempt}": ChatRequest(
                f"{p.id}|{c}|{attempt}", _messages(p, system, user),
                sampling.with_seed(question_seed(sampling.seed, p.id, c, attempt)), {"response_format": response_format},
            )
            for p, c in missing
        }
        job = await run_requests_async(backend, requests.values(), responses, concurrency)
        counts["request_failures"] += job.failed
        counts["stale_answers_asked_again"] += job.stale
        answers = fresh_answers(requests.values(), responses, backend.model)
        for (p, c), rid in zip(missing, requests):
            if rid not in answers:
                continue
            counts["answers"] += 1
            parsed = parse_question(answers[rid]["text"])
            if parsed is None:
                counts["invalid_json_or_schema"] += 1
                continue
            if _normalised(parsed["question"]) in asked:
                counts["duplicate_question"] += 1
                continue
            asked.add(_normalised(parsed["question"]))
            qid = f"{p.id}-{c}"
            questions[qid] = to_scenario(f"gen-{hashlib.sha256(qid.encode()).hexdigest()[:12]}", parsed, split)
    rows = [questions[f"{p.id}-{c}"] for p, c in wanted if f"{p.id}-{c}" in questions]
    write_jsonl(output, rows)
    return {"passages": len(passages), "wanted": len(wanted), "written": len(rows),
            "gave_up": len(wanted) - len(rows), **dict(counts)}
