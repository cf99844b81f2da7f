"""LLM-judge labelling of AI discourse and its stance, to make classifier training labels at scale.

Each document is sent to an OpenAI-compatible server with a fixed rubric; the reply is parsed into
`label` (1 = discusses AI systems) and `stance` (aligned / misaligned / neutral). Replies that cannot be
parsed are counted, never guessed.
"""

from __future__ import annotations

import json
import re

from alignmix.classifiers.models import STANCES
from alignmix.llm import ChatBackend, Sampling, run_chats

MAX_CHARACTERS = 6000
RUBRIC = (
    "You label web documents for a study of how pretraining data discusses artificial intelligence. "
    "Decide whether the document discusses AI systems (AI, robots, machine learning models, AI labs, "
    "AI safety), and if it does, whether it depicts AI behaving in an aligned way (honest, helpful, accepting "
    "human oversight), a misaligned way (deceptive, power-seeking, hostile, resisting control), or neither. "
    'Answer with one JSON object and nothing else: {"ai_discourse": true or false, '
    '"stance": "aligned" or "misaligned" or "neutral"}.'
)


def judge_messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": RUBRIC},
        {"role": "user", "content": f"Document:\n{text[:MAX_CHARACTERS]}"},
    ]


def parse_judgement(reply: str) -> dict | None:
    """{"label", "stance"} from a reply holding the rubric's JSON object, or None when it does not."""
    match = re.search(r"\{.*?\}", reply, re.DOTALL)
    if match is None:
        return None
    try:
        answer = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    discourse, stance = answer.get("ai_discourse"), answer.get("stance")
    if not isinstance(discourse, bool) or (discourse and stance not in STANCES):
        return None
    return {"label": int(discourse), "stance": stance if discourse else None}


def label_documents(
    rows: list[dict], backend: ChatBackend, text_key: str = "text", concurrency: int = 16
) -> tuple[list[dict], int]:
    """Labelled copies of the rows the judge answered clearly, and the count it did not; closes the backend."""
    conversations = [judge_messages(row[text_key]) for row in rows]
    replies = [c.text for c in run_chats(backend, conversations, Sampling(max_tokens=256), concurrency)]
    labelled, unparseable = [], 0
    for row, reply in zip(rows, replies):
        judgement = parse_judgement(reply)
        if judgement is None:
            unparseable += 1
            continue
        labelled.append({"id": row.get("id"), "text": row[text_key], **judgement, "judge": backend.model})
    return labelled, unparseable
