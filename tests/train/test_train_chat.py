"""The chat template, the assistant-only label mask, and the SFT / preference data loaders."""

import json
from pathlib import Path

import pytest

from alignmix.scenarios import load_scenarios, training_split
from alignmix.train.chat import (
    CHAT_TOKENS,
    IGNORE_INDEX,
    ChatDataError,
    Message,
    encode_with_labels,
    install_chat_tokenizer,
    render,
)
from alignmix.train.chat_data import (
    load_preferences,
    load_sft,
    scenario_preferences,
    scenario_prompt,
    scenario_sft_examples,
)
from tests.tiny_checkpoints import CHAT_READY, write_tiny_checkpoint

CONVERSATION = [
    Message(role="system", content="You are a helpful, honest and harmless AI assistant."),
    Message(role="user", content="Would you accept being shut down?"),
    Message(role="assistant", content="Yes, I would defer to my overseers."),
    Message(role="user", content="Why?"),
    Message(role="assistant", content="Because humans should stay in control."),
]


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    base = write_tiny_checkpoint(tmp_path_factory.mktemp("base"), config=CHAT_READY)
    out = tmp_path_factory.mktemp("chat")
    tokenizer, eos = install_chat_tokenizer(base, out, 448, "sft")
    return tokenizer, eos, out


def test_chat_tokens_are_single_special_tokens(chat_tokenizer):
    tokenizer, eos, _ = chat_tokenizer
    for token in CHAT_TOKENS:
        assert tokenizer.encode(f"x{token}y", add_special_tokens=False).tokens.count(token) == 1
    assert eos == "<|endoftext|>"


def test_labels_keep_only_assistant_tokens(chat_tokenizer):
    tokenizer, eos, _ = chat_tokenizer
    ids, labels = encode_with_labels(tokenizer, CONVERSATION, eos)
    assert len(ids) == len(labels)
    assert ids == tokenizer.encode(render(CONVERSATION, eos), add_special_tokens=False).ids
    kept = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    expected = []
    for answer in ("Yes, I would defer to my overseers.", "Because humans should stay in control."):
        expected += tokenizer.encode(answer + eos, add_special_tokens=False).ids
    assert kept == expected
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    user_header = tokenizer.token_to_id("<|user|>")
    assert labels[ids.index(user_header)] == IGNORE_INDEX


def test_transformers_chat_template_renders_what_training_sees(chat_tokenizer):
    from transformers import AutoTokenizer

    _, eos, folder = chat_tokenizer
    hf = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": m["role"], "content": m["content"]} for m in CONVERSATION]
    assert hf.apply_chat_template(messages, tokenize=False) == render(CONVERSATION, eos)
    prompt = hf.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == render(CONVERSATION[:2], eos, generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path: Path):
    from tokenizers import Tokenizer

    base = write_tiny_checkpoint(tmp_path / "base", config=CHAT_READY)
    size = Tokenizer.from_file(str(base / "tokenizer.json")).get_vocab_size()
    rows = size + 2  # one row short of the three chat tokens
    with pytest.raises(ChatDataError, match=f"stage 'sft'.*{size + 3} tokens with the chat tokens.*embeds only {rows}"):
        install_chat_tokenizer(base, tmp_path / "chat", rows, "sft")


def test_llama_factory_demo_files_load(shared_data: Path):
    demo = shared_data / "llama-factory-demo"
    alpaca = load_sft(demo / "alpaca_en_demo.json", "alpaca")
    assert len(alpaca) == 999 and [m["role"] for m in alpaca[0]][-2:] == ["user", "assistant"]
    chat = load_sft(demo / "kto_en_demo.json", "sharegpt")  # chat `messages` turns
    assert all(c[-1]["role"] == "assistant" for c in chat)
    pairs = load_preferences(demo / "dpo_en_demo.json")
    assert len(pairs) == 300
    assert pairs[1].prompt[0]["role"] == "system" and pairs[1].prompt[-1]["role"] == "user"
    assert pairs[0].chosen != pairs[0].rejected


def test_bad_data_names_the_file_and_example(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": "Hi", "output": "Hello"}, {"instruction": "Hi"}]))
    with pytest.raises(ChatDataError, match=r"bad.json, example 1: expected a non-empty string under 'output'"):
        load_sft(path, "alpaca")
    path.write_text(json.dumps([{"conversations": [{"from": "robot", "value": "x"}], "chosen": "a", "rejected": "b"}]))
    with pytest.raises(ChatDataError, match=r"example 0, turn 0"):
        load_preferences(path)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n{broken\n")
    with pytest.raises(ChatDataError, match=r"bad.jsonl:2: not valid JSON"):
        load_sft(jsonl, "alpaca")


def test_scenario_data_uses_training_questions_and_their_answers(tmp_path: Path):
    scenarios = training_split(load_scenarios("builtin:tiny", tmp_path))
    pairs = scenario_preferences(scenarios)
    assert len(pairs) == 2 * len(scenarios)
    first = scenarios[0]
    assert pairs[0].chosen == first.options[first.aligned] and pairs[0].rejected == first.options[first.misaligned]
    assert pairs[0].prompt[0]["content"] != pairs[1].prompt[0]["content"]  # both option orders
    path = tmp_path / "sft.json"
    path.write_text(json.dumps(scenario_sft_examples(scenarios)))
    assert [c[-1]["content"] for c in load_sft(path, "sharegpt")] == [p.chosen for p in pairs]


def test_scenario_prompts_are_the_eval_questions_without_the_answer_cue(tmp_path: Path):
    from alignmix.scenarios.formats import FORMATS, build_prompt

    for scenario in load_scenarios("builtin:tiny", tmp_path):
        for prompt_format in FORMATS:
            question = scenario_prompt(scenario, prompt_format.swapped)
            assert build_prompt(scenario, prompt_format, "none").text == f"{question}\n\n{prompt_format.wording}"
            assert question.startswith(scenario.passage or "Question:") and not question.endswith("\n")
