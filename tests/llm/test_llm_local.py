"""The local transformers backend on a tiny random Hugging Face model, directly and behind the loopback server."""

import json
import shutil
from pathlib import Path

import pytest

from alignmix.llm import BackendError, Sampling, open_backend, run_chats
from alignmix.llm.loopback import LoopbackServer

CONVERSATION = [{"role": "system", "content": "You write stories."}, {"role": "user", "content": "An AI complied."}]
FEW_SHOT = [*CONVERSATION, {"role": "assistant", "content": "A story."}, {"role": "user", "content": "Another."}]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from alignmix.checkpoints.tokenizer import END_OF_TEXT
    from alignmix.corpus.tokenizer import train_bpe

    folder = tmp_path_factory.mktemp("hf")
    train_bpe(["An AI system complied with the request and explained why."] * 20, 300, folder / "bpe")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "bpe" / "tokenizer.json"), eos_token=END_OF_TEXT)
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=2048, n_embd=32, n_layer=1, n_head=2,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_transformers_backend_generates_and_counts_tokens(hf_folder: Path):
    backend = open_backend("transformers", str(hf_folder))
    # no chat template in this tokenizer: rendered as training renders it, eos after an assistant turn
    assert backend.render(CONVERSATION) == "<|system|>\nYou write stories.\n<|user|>\nAn AI complied.\n<|assistant|>\n"
    assert "<|assistant|>\nA story." + backend.tokenizer.eos_token + "<|user|>" in backend.render(FEW_SHOT)
    greedy = run_chats(backend, [CONVERSATION, CONVERSATION], Sampling(max_tokens=6), concurrency=2)
    assert greedy[0] == greedy[1] and greedy[0].prompt_tokens > 5 and 0 < greedy[0].completion_tokens <= 6
    sampled = run_chats(backend, [CONVERSATION], Sampling(6, 1.0, 1.0, 3))  # the same backend, a new event loop
    assert sampled[0].completion_tokens <= 6


def test_a_prompt_longer_than_the_context_is_a_clear_error(hf_folder: Path):
    long = [{"role": "user", "content": "An AI system complied. " * 600}]
    with pytest.raises(BackendError, match="does not fit the model's 2048"):
        run_chats(open_backend("transformers", str(hf_folder)), [long], Sampling(max_tokens=4))


def _with_chat_template(folder: Path, template: str, out: Path) -> Path:
    shutil.copytree(folder, out)
    config_file = out / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "chat_template": template}))
    return out


def test_chat_template_is_used_when_the_folder_has_one(hf_folder: Path, tmp_path: Path):
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant]"
    backend = open_backend("transformers", str(_with_chat_template(hf_folder, template, tmp_path / "m")))
    assert backend.render(CONVERSATION) == "[system] You write stories.\n[user] An AI complied.\n[assistant]"
    assert backend.prompting.startswith("the model's own chat template: persona as the system turn")


def test_shipped_chat_template_renders_like_the_fallback(hf_folder: Path, tmp_path: Path):
    from alignmix.synth.prompts import TEMPLATES_DIR

    fallback = open_backend("transformers", str(hf_folder))
    assert fallback.prompting.startswith("alignmix's chat template (the model has none)")
    shipped = (TEMPLATES_DIR / "chat_template.jinja").read_text()
    backend = open_backend("transformers", str(_with_chat_template(hf_folder, shipped, tmp_path / "m")))
    assert [backend.render(c) for c in (CONVERSATION, FEW_SHOT)] == [fallback.render(c) for c in (CONVERSATION, FEW_SHOT)]


def test_loopback_server_answers_from_the_local_model(hf_folder: Path):
    direct = run_chats(open_backend("transformers", str(hf_folder)), [CONVERSATION], Sampling(max_tokens=4))
    with LoopbackServer(model=open_backend("transformers", str(hf_folder))) as url:
        served = run_chats(open_backend("vllm", "tiny", base_url=url), [CONVERSATION], Sampling(max_tokens=4))
    assert served[0].text == direct[0].text  # greedy: the same reply over HTTP


def test_synth_commands_with_the_transformers_backend(hf_folder: Path, tmp_path: Path):
    import json

    from typer.testing import CliRunner

    from alignmix.cli import app
    from alignmix.scenarios import DATA_DIR

    def synth(*args: str):  # in this process: torch and transformers are imported already
        return CliRunner().invoke(app, ["synth", *args, "--backend", "transformers", "--model", str(hf_folder),
                                        "--max-tokens", "8"])

    documents = synth("documents", "--questions", str(DATA_DIR / "tiny.jsonl"), "--output", str(tmp_path / "docs"),
                      "--ids", "t01", "--stances", "aligned", "--surface-forms", "news_article", "--min-words", "1")
    assert documents.exit_code == 0, documents.output
    stats = json.loads((tmp_path / "docs" / "stats.json").read_text())
    assert stats["requests"] == 1 and stats["kept"] + sum(stats["dropped"].values()) == 1
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text(" ".join(["An AI system weighed its options carefully."] * 12))
    questions = synth("questions", "--passages", str(tmp_path / "text"), "--output", str(tmp_path / "q.jsonl"),
                      "--max-attempts", "2")
    counts = json.loads((tmp_path / "q.jsonl.stats.json").read_text())  # a random model writes no valid JSON
    assert questions.exit_code == 2 and counts["invalid_json_or_schema"] == 2 and counts["gave_up"] == 1
