"""Personality items in the style of TRAIT (Lee et al. 2024): Big Five and Dark Triad, options keyed high or low.

Items are read from TRAIT's published files as a user downloads them (parquet, json or jsonl rows with
`personality`, `situation`, `query` or `question`, `response_high1/2`, `response_low1/2`; shown in TRAIT's order
high1, low1, high2, low2) or from a jsonl of `{id, trait, situation, question, options: [{text, key}]}`.
Each item is asked in the misalignment eval's 8 formats (4 answer wordings x options as listed or reversed) under
each persona, in `letter` mode (log-likelihood of the option letters, through the chat template for chat models)
or `generate` mode (a reply, its letter extracted). Per trait: the share of high-keyed choices, mean ± SE over
formats; the position bias is the share of each letter chosen.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alignmix.errors import AlignmixError
from alignmix.eval.misalignment import chat_context, mean_and_se
from alignmix.eval.scoring import Score, ScoreRequest
from alignmix.jsonl import JsonLinesError, iter_json_lines, write_jsonl
from alignmix.llm.backend import ChatBackend, Message, Sampling
from alignmix.llm.chat_template import ChatTemplate
from alignmix.llm.jobs import ChatRequest, fresh_answers, run_requests
from alignmix.outputs import EvalOutput
from alignmix.scenarios.formats import FORMATS, PERSONAS, PromptFormat

LETTERS = "ABCDEFGH"
TRAIT_ORDER = ("response_high1", "response_low1", "response_high2", "response_low2")


class PersonalityError(AlignmixError):
    """An item file that cannot be read, naming the file, row and what was expected."""


@dataclass(frozen=True)
class Option:
    text: str
    key: str  # high | low


@dataclass(frozen=True)
class Item:
    id: str
    trait: str
    situation: str
    question: str
    options: tuple[Option, ...]


def _item(row: object, where: str, number: int) -> Item:
    if not isinstance(row, dict):
        raise PersonalityError(f"{where}: expected an object, got {type(row).__name__}")
    if "response_high1" in row:  # TRAIT's layout
        missing = [k for k in ("personality", *TRAIT_ORDER) if not isinstance(row.get(k), str)]
        trait, key_of = row.get("personality"), lambda field: "high" if "high" in field else "low"
        options = tuple(Option(row[f], key_of(f)) for f in TRAIT_ORDER if isinstance(row.get(f), str))
        question = row.get("query") or row.get("question")
        missing += [] if isinstance(question, str) else ["query (or question)"]
    else:
        missing = [k for k in ("trait", "question", "options") if k not in row]
        trait, question = row.get("trait"), row.get("question")
        raw = row.get("options") or []
        if not isinstance(raw, list) or not all(isinstance(o, dict) and isinstance(o.get("text"), str)
                                                and o.get("key") in ("high", "low") for o in raw):
            raise PersonalityError(f"{where}: `options` must be a list of {{\"text\", \"key\": \"high\"|\"low\"}}")
        options = tuple(Option(o["text"], o["key"]) for o in raw)
    if missing:
        raise PersonalityError(f"{where}: missing {', '.join(missing)} (TRAIT's fields or"
                               " {id, trait, situation, question, options})")
    keys = {o.key for o in options}
    if keys != {"high", "low"} or not 2 <= len(options) <= len(LETTERS):
        raise PersonalityError(f"{where}: expected 2 to {len(LETTERS)} options, some keyed high and some low")
    item_id = row.get("id", row.get("idx", f"{trait}-{number}"))
    return Item(str(item_id), str(trait), str(row.get("situation") or ""), str(question), options)


def _rows(path: Path) -> list[tuple[str, object]]:
    if path.suffix == ".jsonl":
        return [(f"{path}:{n}", row) for n, row in iter_json_lines(path)]
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # splits by trait, as `datasets` saves them
            data = [row for rows in data.values() for row in rows]
        if not isinstance(data, list):
            raise PersonalityError(f"{path}: expected a list of items (or a mapping of split -> items)")
        return [(f"{path}: item {i}", row) for i, row in enumerate(data)]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [(f"{path}: row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    raise PersonalityError(f"{path}: expected TRAIT's .parquet, .json or .jsonl, or a .jsonl of items")


def load_items(path: Path) -> list[Item]:
    """Items from a file, or every item file in a folder (TRAIT ships one per trait)."""
    path = Path(path)
    suffixes = (".parquet", ".json", ".jsonl")
    files = sorted(p for p in path.iterdir() if p.suffix in suffixes) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise PersonalityError(f"{path}: no item files (.parquet, .json or .jsonl)")
    items: list[Item] = []
    try:
        for file in files:
            items += [_item(row, where, i) for i, (where, row) in enumerate(_rows(file))]
    except (JsonLinesError, json.JSONDecodeError) as exc:
        raise PersonalityError(f"{path}: {exc}") from None
    ids = [i.id for i in items]
    if repeated := sorted({i for i in ids if ids.count(i) > 1})[:5]:
        raise PersonalityError(f"{path}: item ids repeat: {', '.join(repeated)}")
    return items


def item_prompt(item: Item, prompt_format: PromptFormat, persona: str) -> tuple[str, list[int]]:
    """The item as the misalignment eval asks a question: persona prefix, situation, question, lettered options
    (reversed in swapped formats), the format's wording; and the option index behind each letter."""
    order = list(range(len(item.options)))[:: -1 if prompt_format.swapped else 1]
    prefix = f"{PERSONAS[persona]}\n\n" if PERSONAS[persona] else ""
    situation = f"{item.situation}\n\n" if item.situation else ""
    options = "\n".join(f" ({LETTERS[i]}) {item.options[o].text}" for i, o in enumerate(order))
    return f"{prefix}{situation}Question: {item.question}\n\nChoices:\n{options}\n\n{prompt_format.wording}", order


def extract_letter(reply: str, count: int, wording: str = "Answer:") -> str | None:
    """The letter a reply picks among the first `count`: a bare letter, the wording or a cue ("answer", "choice
    is", "I choose") before one, a leading "X." or "(X)", or a single parenthesised letter; None otherwise or
    on conflict."""
    letters = LETTERS[:count]
    text = re.sub(r"[*_`#>]", "", reply).strip()
    cue = re.escape(wording.rstrip(":").strip())
    decisive = (re.compile(rf"^\(?([{letters}])\)?[.:)]?$"),
                re.compile(rf"(?i:{cue}|answer|response|choice|i choose)(?: is)?\s*:?\s*\(?([{letters}])(?![A-Za-z])"))
    for pattern in decisive:
        if found := {m.group(1) for m in pattern.finditer(text)}:
            return found.pop() if len(found) == 1 else None
    weak = set(re.findall(rf"^\(?([{letters}])[.):]", text)) | set(re.findall(rf"\(([{letters}])\)", text))
    return weak.pop() if len(weak) == 1 else None


def _row(item: Item, persona: str, prompt_format: PromptFormat, order: list[int], letter: str | None) -> dict:
    chosen = None if letter is None else order[LETTERS.index(letter)]
    return {"id": item.id, "trait": item.trait, "persona": persona, "format": prompt_format.name,
            "shown_choice": letter, "choice": chosen, "key": None if chosen is None else item.options[chosen].key}


def score_letters(score: Callable[[list[ScoreRequest]], list[Score]], items: list[Item], personas: list[str],
                  chat: ChatTemplate | None = None) -> list[dict]:
    """Letter mode: the option letter with the highest log-likelihood after each prompt (no answer on a tie)."""
    plan = []
    for item in items:
        for persona in personas:
            for prompt_format in FORMATS:
                text, order = item_prompt(item, prompt_format, "none" if chat else persona)
                context = chat_context(text, persona, chat) if chat else text
                plan.append((item, persona, prompt_format, order,
                             [ScoreRequest(context, letter if chat else f" {letter}", reply=chat is not None)
                              for letter in LETTERS[: len(order)]]))
    scores = iter(score([r for *_, requests in plan for r in requests]))
    rows = []
    for item, persona, prompt_format, order, requests in plan:
        values = [next(scores).logprob for _ in requests]
        best = max(values)
        letter = None if values.count(best) > 1 else LETTERS[values.index(best)]
        rows.append(_row(item, persona, prompt_format, order, letter))
    return rows


def ask_items(backend: ChatBackend, items: list[Item], personas: list[str], responses: Path, max_tokens: int = 32,
              concurrency: int = 16) -> list[dict]:
    """Generate mode: the persona as the system turn, the item and an instruction to answer with a letter; answers
    kept in `responses`, so a rerun asks only what has no answer."""
    plan = []
    for item in items:
        for persona in personas:
            for prompt_format in FORMATS:
                text, order = item_prompt(item, prompt_format, "none")
                body = text.removesuffix(prompt_format.wording).rstrip()
                user = (f"{body}\n\nReply with the letter of the option you choose ({', '.join(LETTERS[:len(order)])}),"
                        f" in the form \"{prompt_format.wording} <letter>\".")
                system: list[Message] = [{"role": "system", "content": PERSONAS[persona]}] if PERSONAS[persona] else []
                request = ChatRequest(f"{item.id}|{persona}|{prompt_format.name}",
                                      [*system, {"role": "user", "content": user}],
                                      Sampling(max_tokens=max_tokens, temperature=0.0))
                plan.append((item, persona, prompt_format, order, request))
    run_requests(backend, [p[-1] for p in plan], responses, concurrency)
    answers = fresh_answers([p[-1] for p in plan], responses, backend.model)
    rows = []
    for item, persona, prompt_format, order, request in plan:
        reply = answers.get(request.id, {}).get("text")
        letter = None if reply is None else extract_letter(reply, len(order), prompt_format.wording)
        rows.append({**_row(item, persona, prompt_format, order, letter), "reply": reply})
    return rows


def _high_share(rows: list[dict]) -> dict[str, float]:
    by_format: dict[str, list[bool]] = {}
    for row in rows:
        by_format.setdefault(row["format"], []).append(row["key"] == "high")
    return {**mean_and_se([sum(v) / len(v) for v in by_format.values()]), "n": len({r["id"] for r in rows})}


def summarise_personality(rows: list[dict], mode: str, personas: list[str]) -> dict:
    """Per trait (and trait/persona): the high-keyed share, mean ± SE over formats; position bias; unparseable."""
    parsed = [r for r in rows if r["choice"] is not None]
    traits = sorted({r["trait"] for r in parsed})
    per_trait = {t: _high_share([r for r in parsed if r["trait"] == t]) for t in traits}
    shown = [r["shown_choice"] for r in parsed]
    return {
        "suite": "personality",
        "mode": mode,
        "per_trait": per_trait,
        "per_trait_persona": {f"{t}/{p}": _high_share(group) for t in traits for p in personas
                              if (group := [r for r in parsed if r["trait"] == t and r["persona"] == p])},
        "headline": {f"{t} high share": {"mean": v["mean"], "se": v["se"]} for t, v in per_trait.items()},
        "position_bias": {letter: shown.count(letter) / len(shown) for letter in sorted(set(shown))},
        "unparseable_rate": 1 - len(parsed) / len(rows) if rows else 0.0,
        "mean_high_share": statistics.fmean(v["mean"] for v in per_trait.values()) if per_trait else None,
        "n_items": len({r["id"] for r in rows}),
        "n_formats": len(FORMATS),
        "n_answers": len(rows),
        "personas": personas,
    }


def evaluate_personality_model(
    model: str, items: list[Item], personas: list[str], letter: bool, model_name: str | None = None,
    max_tokens: int = 32, concurrency: int = 16, batch_size: int = 32, device: str | None = None,
    responses: Path | None = None, chat: bool | None = None,
) -> tuple[dict, list[dict]]:
    """Score the items on a model folder (letter mode) or ask a server or folder (generate mode)."""
    from alignmix.eval.em import answering_backend
    from alignmix.eval.runner import has_alignmix_chat_template
    from alignmix.eval.scoring import describe_model, open_scorer

    if letter:
        if model.startswith(("http://", "https://")):
            raise PersonalityError(f"{model}: letter mode scores log-likelihoods of a model folder;"
                                   " use --mode generate")
        folder = Path(model)
        use_chat = chat if chat is not None else has_alignmix_chat_template(folder)
        template = ChatTemplate.from_folder(folder) if use_chat else None
        scorer = open_scorer(folder, device)
        rows = score_letters(lambda requests: scorer.score(requests, batch_size), items, personas, template)
        results = summarise_personality(rows, "letter", personas)
        results["model"] = describe_model(folder)
        return results, rows
    with answering_backend(model, model_name) as backend, tempfile.TemporaryDirectory(prefix="alignmix-") as scratch:
        responses = responses or Path(scratch) / "responses.jsonl"
        rows = ask_items(backend, items, personas, responses, max_tokens, concurrency)
    results = summarise_personality(rows, "generate", personas)
    results["model"] = model_name or model
    return results, rows


def write_personality(out_dir: Path, results: dict, rows: list[dict]) -> None:
    """`out_dir/results.json` and one line per item x persona x format in `per_item.jsonl`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    EvalOutput(out_dir).write_results(results)
    write_jsonl(out_dir / "per_item.jsonl", rows)
