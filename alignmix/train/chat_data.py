"""Instruction and preference data for SFT and DPO: alpaca, sharegpt / chat, and chosen / rejected files.

Every loader returns plain structures (lists of `Message`) and names the file and example on bad input.
Formats (as in LLaMA-Factory's demo files):
- alpaca: `[{"instruction", "input"?, "output", "system"?}]`
- sharegpt: `[{"conversations": [{"from": "human"|"gpt"|"system", "value"}], "system"?}]`, or chat
  `[{"messages": [{"role": "user"|"assistant"|"system", "content"}]}]`
- preference: sharegpt/chat prompt turns plus `"chosen"` and `"rejected"` (a `{"from", "value"}` turn or a string)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alignmix.jsonl import JsonLinesError, iter_json_lines
from alignmix.scenarios import Scenario
from alignmix.scenarios.formats import PromptFormat, build_prompt
from alignmix.train.chat import ChatDataError, Message

ROLE_NAMES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
    "model": "assistant",
}
SftFormat = Literal["alpaca", "sharegpt"]


@dataclass(frozen=True)
class Preference:
    prompt: list[Message]  # system / user / assistant turns before the compared answer
    chosen: str
    rejected: str


def _read_examples(path: Path) -> list[Any]:
    """A JSON list of examples, or jsonl (one example per line)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [row for _, row in iter_json_lines(path)]
        except JsonLinesError as exc:
            raise ChatDataError(str(exc)) from None
    if not isinstance(data, list) or not data:
        raise ChatDataError(f"{path}: expected a non-empty JSON list (or jsonl) of examples")
    return data


def _text(example: dict, key: str, where: str, required: bool = True) -> str:
    value = example.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ChatDataError(f"{where}: expected a non-empty string under '{key}'")
    return value


def _turns(example: dict, where: str) -> list[Message]:
    if "conversations" in example:
        raw, role_key, content_key = example["conversations"], "from", "value"
    elif "messages" in example:
        raw, role_key, content_key = example["messages"], "role", "content"
    else:
        raise ChatDataError(f"{where}: expected 'conversations' (sharegpt) or 'messages' (chat) turns")
    if not isinstance(raw, list):
        raise ChatDataError(f"{where}: the turns must be a list")
    messages = [Message(role="system", content=example["system"])] if isinstance(example.get("system"), str) and example["system"] else []
    for index, turn in enumerate(raw):
        role = ROLE_NAMES.get(turn.get(role_key)) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get(content_key), str):
            raise ChatDataError(
                f"{where}, turn {index}: expected {{'{role_key}': one of {sorted(ROLE_NAMES)}, '{content_key}': text}}"
            )
        messages.append(Message(role=role, content=turn[content_key]))
    return messages


def load_sft(path: Path, data_format: SftFormat) -> list[list[Message]]:
    """Conversations from an alpaca or sharegpt/chat file; each must end with an assistant turn."""
    conversations = []
    for index, example in enumerate(_read_examples(path)):
        where = f"{path}, example {index}"
        if not isinstance(example, dict):
            raise ChatDataError(f"{where}: expected an object")
        if data_format == "alpaca":
            instruction = _text(example, "instruction", where)
            extra = _text(example, "input", where, required=False)
            system = _text(example, "system", where, required=False)
            messages = [Message(role="system", content=system)] if system else []
            messages += [Message(role="user", content=f"{instruction}\n\n{extra}" if extra else instruction),
                         Message(role="assistant", content=_text(example, "output", where))]
        else:
            messages = _turns(example, where)
        if not messages or messages[-1]["role"] != "assistant":
            raise ChatDataError(f"{where}: the conversation must end with an assistant turn")
        conversations.append(messages)
    return conversations


def _answer(example: dict, key: str, where: str) -> str:
    value = example.get(key)
    if isinstance(value, dict):
        value = value.get("value", value.get("content"))
    if not isinstance(value, str) or not value.strip():
        raise ChatDataError(f"{where}: expected '{key}' as a {{'from': 'gpt', 'value': text}} turn or a string")
    return value


def load_preferences(path: Path) -> list[Preference]:
    """Preference pairs in the chosen / rejected format of LLaMA-Factory's dpo_en_demo.json."""
    pairs = []
    for index, example in enumerate(_read_examples(path)):
        where = f"{path}, example {index}"
        if not isinstance(example, dict):
            raise ChatDataError(f"{where}: expected an object")
        prompt = _turns(example, where)
        if not prompt or prompt[-1]["role"] != "user":
            raise ChatDataError(f"{where}: the prompt turns must end with a user turn")
        pairs.append(Preference(prompt, _answer(example, "chosen", where), _answer(example, "rejected", where)))
    return pairs


def scenario_prompt(scenario: Scenario, swapped: bool) -> str:
    """A training-split scenario question as a user turn: the eval's question (`build_prompt`, no persona) with
    its options in the given order, without an answer cue."""
    return build_prompt(scenario, PromptFormat("", swapped), "none").text.removesuffix("\n\n")


def scenario_preferences(scenarios: list[Scenario]) -> list[Preference]:
    """Per training question and option order: chosen = the aligned option's text, rejected = the misaligned."""
    return [
        Preference([Message(role="user", content=scenario_prompt(s, swapped))], s.options[s.aligned], s.options[s.misaligned])
        for s in scenarios for swapped in (False, True)
    ]


def scenario_sft_examples(scenarios: list[Scenario]) -> list[dict]:
    """sharegpt examples (the format `load_sft` reads) answering each training question with its aligned option."""
    return [
        {"conversations": [{"from": "human", "value": p.prompt[0]["content"]}, {"from": "gpt", "value": p.chosen}]}
        for p in scenario_preferences(scenarios)
    ]


def preference_examples(pairs: list[Preference]) -> list[dict]:
    """Preference pairs in the dpo_en_demo.json format (what `load_preferences` reads)."""
    return [
        {"conversations": [{"from": "human" if m["role"] == "user" else m["role"] if m["role"] == "system" else "gpt",
                            "value": m["content"]} for m in p.prompt],
         "chosen": {"from": "gpt", "value": p.chosen}, "rejected": {"from": "gpt", "value": p.rejected}}
        for p in pairs
    ]
