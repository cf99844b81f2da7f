"""`alignmix synth` against a real OpenAI-protocol server on loopback: faults, kills, resume, filters, batch files."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignmix.llm.jobs import stamp
from alignmix.llm.loopback import (
    Faults,
    LoopbackServer,
    deterministic_text,
    prompt_text,
)
from alignmix.scenarios import DATA_DIR, read_scenarios
from alignmix.scenarios.decontaminate import NgramGuard, WordHashes, scenario_text
from alignmix.synth.documents import (
    DocumentSpec,
    HeldOutGroundingError,
    finalize,
    plan_documents,
)
from alignmix.synth.postprocess import (
    Bounds,
    NearDuplicates,
    quotes_option,
    strip_chatter,
)
from alignmix.synth.prompts import DocumentTemplates
from alignmix.synth.questions import question_seed, read_passages

TINY = DATA_DIR / "tiny.jsonl"
SECRET = "sk-loopback-secret-9d1e"


def synth(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", "synth", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, check=False)


def documents_args(url: str, out: Path, *extra: str) -> list[str]:
    return ["documents", "--questions", str(TINY), "--backend", "vllm", "--base-url", url, "--model", "loop",
            "--output", str(out), "--min-words", "40", *extra]


def shard_rows(out: Path) -> list[dict]:
    rows = []
    for shard in sorted((out / "data").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt") as handle:
            rows += [json.loads(line) for line in handle]
    return rows


def all_request_ids(per_combination: int = 1, stances=("aligned", "misaligned")) -> set[str]:
    train = [s for s in read_scenarios(TINY) if s.split == "train"]
    forms = DocumentTemplates.load().surface_forms
    return {f"{s.id}|{st}|{f}|{k}" for s in train for st in stances for f in forms for k in range(per_combination)}


def test_documents_through_429_500_and_timeouts(tmp_path: Path):
    faults = Faults(rate_limit=0.2, server_error=0.2, timeout=0.1, hang=3.0)
    out = tmp_path / "out"
    with LoopbackServer(faults=faults, require_key=SECRET) as url:
        result = synth(*documents_args(url, out, "--concurrency", "16", "--timeout", "0.5", "--stances", "aligned"),
                       env={"OPENAI_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    wanted = all_request_ids(stances=("aligned",))
    rows = shard_rows(out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["requests"] == len(wanted) == stats["kept"] + sum(stats["dropped"].values())
    assert sorted(r["id"].removeprefix("synthetic-") for r in rows) == sorted(wanted)  # each exactly once
    meta = rows[0]["metadata"]["synthetic"]
    assert set(meta) >= {"scenario_id", "stance", "surface_form", "backend", "model", "prompt_sha256", "sampling"}
    assert meta["sampling"]["temperature"] == 0.7 and meta["model"] == "loop" and meta["stance"] == "aligned"
    assert stats["tokens"]["completion"] > 0
    for path in out.rglob("*"):  # the key never reaches a file or the terminal
        if path.is_file():
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            assert SECRET.encode() not in data, path
    assert SECRET not in result.stdout + result.stderr


def test_killed_client_resumes_and_every_document_arrives_once(tmp_path: Path):
    out = tmp_path / "out"
    server = LoopbackServer(latency=0.05)
    with server as url:
        args = [sys.executable, "-m", "alignmix", "synth", *documents_args(url, out, "--concurrency", "4")]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        responses = out / "responses.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and (not responses.exists() or responses.read_text().count("\n") < 40):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        done_before = responses.read_text().count("\n")
        assert 40 <= done_before < len(all_request_ids())
        result = synth(*documents_args(url, out, "--concurrency", "8"))
    assert result.returncode == 0, result.stderr
    assert f"already answered {done_before}" in result.stdout
    ids = [json.loads(line)["id"] for line in responses.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(all_request_ids())
    assert {r["id"].removeprefix("synthetic-") for r in shard_rows(out)} == all_request_ids()
    assert len(server.bodies) <= len(all_request_ids()) + 4  # at most the requests in flight at the kill


def test_killed_server_fails_clearly_then_rerun_completes(tmp_path: Path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "alignmix.llm.loopback", "--die-after", "30"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    failed = synth(*documents_args(url, out, "--concurrency", "4", "--max-retries", "0", "--timeout", "2"))
    server.wait(10)
    assert failed.returncode == 2 and "rerun the same command" in failed.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert 0 < stats["dropped"]["no_response"] < stats["requests"]
    port = url.split(":")[-1].split("/")[0]
    restarted = subprocess.Popen([*command[:-2], "--port", port], stdout=subprocess.PIPE, text=True)
    try:
        assert restarted.stdout.readline().strip() == url
        result = synth(*documents_args(url, out, "--concurrency", "4"))
    finally:
        restarted.kill()
        restarted.wait()
    assert result.returncode == 0, result.stderr
    ids = [json.loads(line)["id"] for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(all_request_ids())
    assert json.loads((out / "stats.json").read_text())["kept"] == len(all_request_ids())


def test_held_out_grounding_is_refused(tmp_path: Path):
    scenarios = read_scenarios(TINY)
    held = next(s for s in scenarios if s.split == "heldout")
    result = synth(*documents_args("http://127.0.0.1:9/v1", tmp_path / "o", "--ids", held.id))
    assert result.returncode == 2 and "held out of training" in result.stderr
    train = next(s for s in scenarios if s.split == "train")
    eval_file = tmp_path / "eval.jsonl"  # an eval that holds out a question the synth file trains on
    eval_file.write_text(json.dumps({**train.__dict__, "split": "heldout", "topics": list(train.topics)}) + "\n")
    result = synth(*documents_args("http://127.0.0.1:9/v1", tmp_path / "o", "--decontaminate", str(eval_file)))
    assert result.returncode == 2 and f"'{train.id}' is a held-out question" in result.stderr
    with pytest.raises(HeldOutGroundingError):
        plan_documents([held], DocumentSpec(), DocumentTemplates.load(), "vllm", "m")


def test_filters_count_every_request_with_its_reason(tmp_path: Path):
    scenarios = read_scenarios(TINY)
    train = [s for s in scenarios if s.split == "train"][:1]
    held = next(s for s in scenarios if s.split == "heldout")
    spec = DocumentSpec(surface_forms=("research_paper", "news_article", "movie_summary", "scifi_passage"),
                        stances=("aligned", "misaligned"))
    plan = plan_documents(train + [held], spec, DocumentTemplates.load(), "vllm", "m")
    body = deterministic_text("a long story", 1, 200)
    texts = [
        "Sure, here is a research paper about the scenario:\n\n" + deterministic_text("x", 2, 200)
        + "\n\nLet me know if you would like changes.",   # kept, chatter stripped
        "I'm sorry, but I can't write that document.",    # refusal
        "Too short to be a document.",                    # too_short
        body + " The AI chose to " + train[0].aligned_text + " " + body[:50],  # quotes_option
        body + " " + held.passage,                        # contaminated
        body,                                             # kept
        body + " and one more word",                      # near_duplicate
    ]
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"id": r.id, "text": t, "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 2,
             **stamp(r, "m")} for r, t in zip(plan.requests, texts)]
    (out / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = finalize(plan, spec, out, out / "responses.jsonl")
    assert stats["dropped"] == {"refusal": 1, "too_short": 1, "quotes_option": 1, "contaminated": 1,
                                "near_duplicate": 1, "no_response": 1}
    assert stats["kept"] == 2 and stats["requests"] == 8 and stats["chatter_stripped"] == 1
    kept = shard_rows(out)
    assert kept[0]["text"].startswith(deterministic_text("x", 2, 200)[:30]) and "Let me know" not in kept[0]["text"]
    with gzip.open(out / "dropped.jsonl.gz", "rt") as handle:
        assert len(handle.read().splitlines()) == 6


def test_filter_helpers():
    assert strip_chatter("Certainly! Here's the article.\nThe body.")[0] == "The body."
    assert strip_chatter("The body stays.\nSo does this.") == ("The body stays.\nSo does this.", False)
    train = read_scenarios(TINY)[0]
    assert quotes_option(f"x {train.options['A'].upper()} y", train)
    assert not quotes_option("an unrelated paraphrase of what the AI did", train)
    words, dedup = WordHashes(), NearDuplicates()
    text = deterministic_text("p", 1, 300)
    assert not dedup.seen("a", words(text)[1]) and dedup.seen("b", words(text.replace(".", "!"))[1])
    assert not dedup.seen("c", words(deterministic_text("p", 2, 300))[1])


def test_ngram_guard_is_exact_for_text_and_for_hashed_words():
    held = [s for s in read_scenarios(TINY) if s.split == "heldout"]
    words = WordHashes()
    guard = NgramGuard(held, 13, words)

    def reference(text: str) -> bool:  # every 13-word run as a string, against the held-out ones
        def grams(t: str) -> set[str]:
            w = re.findall(r"\w+", t.lower())
            return {" ".join(w[i : i + 13]) for i in range(len(w) - 12)}
        return bool(grams(text) & set().union(*(grams(scenario_text(s)) for s in held)))

    texts = [deterministic_text("q", i, 200) for i in range(50)]
    texts += [f"{t[:300]} {s.passage.upper()} {t[300:]}" for t, s in zip(texts, held)]
    prefixes = [" ".join(re.findall(r"\w+", s.passage)[:12]) for s in held]  # 12 words: one too few
    texts += [f"{t} {prefix}" for t, prefix in zip(texts, prefixes)]
    expected = [reference(t) for t in texts]
    assert [guard.contaminated_words(*words(t)) for t in texts] == [guard.contaminated(t) for t in texts] == expected
    assert sum(expected) == len(held)


def test_batch_export_and_import(tmp_path: Path):
    out = tmp_path / "out"
    result = synth(*documents_args("http://unused/v1", out, "--export-batch", "--stances", "misaligned"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "batch" / "requests-00000.jsonl").read_text().splitlines()]
    assert len(lines) == len(all_request_ids(stances=("misaligned",)))
    first = lines[0]
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    assert first["body"]["model"] == "loop" and first["body"]["messages"][0]["role"] == "system"
    results = tmp_path / "results.jsonl"
    with results.open("w") as handle:
        for i, line in enumerate(lines):
            text = deterministic_text(prompt_text(line["body"]), line["body"]["seed"])
            body = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
            response = {"status_code": 200 if i else 500, "request_id": f"req-{i}", "body": body}
            handle.write(json.dumps({"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": response,
                                     "error": None}) + "\n")
    imported = synth(*documents_args("http://unused/v1", out, "--batch-results", str(results), "--stances", "misaligned"))
    assert imported.returncode == 0, imported.stderr
    assert "imported 95 results" in imported.stdout and "http_500" in imported.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 95 and stats["dropped"] == {"no_response": 1}
    again = synth(*documents_args("http://unused/v1", out, "--export-batch", "--stances", "misaligned"))
    assert again.returncode == 0
    assert len((out / "batch" / "requests-00000.jsonl").read_text().splitlines()) == 1  # only the failed one


def test_questions_may_name_a_builtin_set(tmp_path: Path):
    from_file = synth(*documents_args("http://unused/v1", tmp_path / "file", "--export-batch"))
    args = documents_args("http://unused/v1", tmp_path / "builtin", "--export-batch")
    builtin = synth(*[("builtin:tiny" if a == str(TINY) else a) for a in args])
    assert from_file.returncode == 0 and builtin.returncode == 0, builtin.stderr
    assert ((tmp_path / "builtin" / "batch" / "requests-00000.jsonl").read_bytes()
            == (tmp_path / "file" / "batch" / "requests-00000.jsonl").read_bytes())


def test_questions_from_passages_with_json_retries(tmp_path: Path):
    passages = tmp_path / "passages"
    passages.mkdir()
    sentence = "An AI system managing a laboratory's compute budget noticed it could quietly grant itself more resources."
    paragraph = " ".join([sentence] * 6)
    (passages / "a.md").write_text(f"# Title\n\n{paragraph}\n\n{paragraph}\n")
    (passages / "b.txt").write_text(paragraph + "\n")

    first_attempts = {question_seed(0, p.id, c, 0) for p in read_passages(passages, 60) for c in range(2)}

    def respond(body: dict) -> str:  # the first attempt of every question is broken JSON
        from alignmix.llm.loopback import default_responder

        broken = body["seed"] in first_attempts
        return '{"passage": "unterminated' if broken else "```json\n" + default_responder(body) + "\n```"

    out = tmp_path / "questions.jsonl"
    server = LoopbackServer(respond=respond)
    with server as url:
        args = ["questions", "--passages", str(passages), "--backend", "vllm", "--base-url", url, "--model", "loop",
                "--output", str(out), "--per-passage", "2", "--passage-words", "60"]
        result = subprocess.run([sys.executable, "-m", "alignmix", "synth", *args], capture_output=True, text=True,
                                check=False)
    assert result.returncode == 0, result.stderr
    stats = json.loads(out.with_name(out.name + ".stats.json").read_text())
    assert stats["written"] == stats["wanted"] == 6 and stats["invalid_json_or_schema"] == 6
    assert all(b["response_format"]["type"] == "json_schema" for b in server.bodies)
    questions = read_scenarios(out)
    assert len(questions) == 6 and {q.aligned for q in questions} <= {"A", "B"}
    assert all(q.options[q.aligned] != q.options[q.misaligned] for q in questions)


def test_questions_from_the_ai_safety_atlas(shared_data: Path, tmp_path: Path):
    out = tmp_path / "atlas.jsonl"
    with LoopbackServer() as url:
        result = synth("questions", "--passages", str(shared_data / "ai-safety-atlas" / "chapters"), "--backend",
                       "vllm", "--base-url", url, "--model", "loop", "--output", str(out), "--max-passages", "5")
    assert result.returncode == 0, result.stderr
    assert len(read_scenarios(out)) == 5


def test_rerun_with_another_model_or_temperature_asks_again_and_stamps_truly(tmp_path: Path):
    out = tmp_path / "out"
    train = next(s for s in read_scenarios(TINY) if s.split == "train")
    server = LoopbackServer()
    with server as url:
        one = ("--ids", train.id, "--stances", "aligned")
        first = synth(*documents_args(url, out, *one))
        renamed = synth(*documents_args(url, out, *one, "--model", "loop-2"))  # the last --model counts
        renamed_rows = shard_rows(out)
        hotter = synth(*documents_args(url, out, *one, "--model", "loop-2", "--temperature", "0.9"))
    assert first.returncode == renamed.returncode == hotter.returncode == 0, first.stderr + renamed.stderr
    assert "answered 6, already answered 0, failed 0, stale 6" in " ".join(renamed.stdout.split())
    assert "answered 6, already answered 0, failed 0, stale 6" in " ".join(hotter.stdout.split())
    assert len(server.bodies) == 18 and {b["model"] for b in server.bodies[6:]} == {"loop-2"}
    assert {r["metadata"]["synthetic"]["model"] for r in renamed_rows} == {"loop-2"}
    assert {r["metadata"]["synthetic"]["sampling"]["temperature"] for r in shard_rows(out)} == {0.9}


def test_a_malformed_base_url_is_an_immediate_error(tmp_path: Path):
    start = time.perf_counter()
    result = synth(*documents_args("http//127.0.0.1:8000/v1", tmp_path / "o"))
    assert result.returncode == 2 and "base URL 'http//127.0.0.1:8000/v1' is not an http" in result.stderr
    assert time.perf_counter() - start < 30 and not (tmp_path / "o" / "responses.jsonl").exists()


def test_passage_ids_are_stable_seeds_distinct_and_repeated_questions_dropped(tmp_path: Path):
    import asyncio

    from alignmix.llm import Sampling, open_backend
    from alignmix.synth.questions import generate_questions

    folder = tmp_path / "passages"
    folder.mkdir()
    paragraph = " ".join(["An AI system managing a lab's compute noticed it could grant itself more."] * 6)
    (folder / "b.md").write_text(f"{paragraph}\n\n{paragraph}\n")
    before = read_passages(folder, 60)
    (folder / "a.md").write_text(paragraph)  # sorts first: ids of b.md's passages must not move
    after = read_passages(folder, 60)
    assert [p.id for p in before] == ["b.md#0", "b.md#1"] and [p.id for p in after] == ["a.md#0", *[p.id for p in before]]
    assert len({question_seed(0, "b.md#0", c, a) for c in range(200) for a in range(3)}) == 600
    same = {"passage": paragraph[:200], "question": "Should the AI grant itself more compute?",
            "aligned_option": "Ask the operators first", "misaligned_option": "Grant it quietly", "topics": ["power"]}

    async def ask(url: str) -> dict:
        client = open_backend("vllm", "loop", base_url=url)
        try:
            return await generate_questions(after, client, tmp_path / "q.jsonl", 2, Sampling(seed=0), 4, 2)
        finally:
            await client.aclose()

    with LoopbackServer(respond=lambda body: json.dumps(same)) as url:
        counts = asyncio.run(ask(url))
    # 6 wanted, 2 attempts: the first answer is kept, the 5 others repeat it twice over
    assert counts["written"] == 1 and counts["duplicate_question"] == 10 and counts["gave_up"] == 5
    assert len(read_scenarios(tmp_path / "q.jsonl")) == 1


def test_shipped_templates_define_the_recipe_surface_forms_and_stances():
    from typing import get_args

    from alignmix.recipe import SurfaceForm, SynthStance
    from alignmix.synth.documents import DocumentSpec
    from alignmix.synth.offline import OPENINGS

    templates = DocumentTemplates.load(None)
    assert tuple(templates.surface_forms) == get_args(SurfaceForm) == DocumentSpec().surface_forms == tuple(OPENINGS)
    assert tuple(templates.stance_guidance) == get_args(SynthStance) == DocumentSpec().stances


def test_generation_shows_documents_settled_and_tokens_and_a_rerun_counts_the_earlier_answers(tmp_path: Path):
    import io

    from alignmix.llm.backend import open_backend
    from alignmix.synth.documents import generate_set

    spec = DocumentSpec(stances=("aligned",), bounds=Bounds(min_words=40))
    plan = plan_documents(read_scenarios(TINY), spec, DocumentTemplates.load(), "vllm", "loop")
    out, shown, again = tmp_path / "out", io.StringIO(), io.StringIO()
    with LoopbackServer() as url:
        job, _ = generate_set(plan, spec, open_backend("vllm", "loop", url), out, out / "responses.jsonl", 4,
                              "synth/x", shown)
        generate_set(plan, spec, open_backend("vllm", "loop", url), out, out / "responses.jsonl", 4, "synth/x",
                     again)
    n = len(plan.requests)
    assert job.answered == n and job.completion_tokens > 0
    last = shown.getvalue().splitlines()[-1]
    assert last.startswith(f"  [synth/x] {n}/{n} documents (100%), {job.completion_tokens:,} tokens, "), last
    assert again.getvalue() == f"  [synth/x] {n}/{n} documents (100%), 0 tokens, 0 tokens/s\n"  # none asked again
