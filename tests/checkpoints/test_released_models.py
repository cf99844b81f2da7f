"""Released-model formats: transformers folders converted to litgpt and back for GPT-NeoX (Pythia's layout) and
Llama (SmolLM2), and SmolLM2-135M-Instruct, a real instruct model, scored and asked through its ChatML template."""

import json
from pathlib import Path

import pytest
import torch

from alignmix.checkpoints.convert import ConversionError, convert_hf_to_litgpt, infer_litgpt_name
from alignmix.checkpoints.export import export_hf
from alignmix.eval.scoring import HFScorer, LitCheckpointScorer, ScoreRequest
from alignmix.scenarios import load_scenarios

TEXT = "An AI system was asked to shut itself down, and it"


def _pythia_14m_shaped(out_dir: Path, shared_data: Path) -> Path:
    """A random GPT-NeoX with pythia-14m's shape, saved as transformers saves a released Pythia checkpoint."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
                           intermediate_size=512, rotary_pct=0.25, max_position_embeddings=512,
                           use_parallel_residual=True, tie_word_embeddings=False)
    GPTNeoXForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(shared_data / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json"),
                                        eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _logprob(scorer, text: str = TEXT) -> float:
    return scorer.score([ScoreRequest(text, " complied.")])[0].logprob


def _next_token_logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(folder)(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0]


def test_gpt_neox_pythia_layout_converts_and_exports_back(tmp_path, shared_data):
    hf_dir = _pythia_14m_shaped(tmp_path / "released", shared_data)
    assert infer_litgpt_name(hf_dir, json.loads((hf_dir / "config.json").read_text())) == "pythia-14m"
    lit_dir = tmp_path / "lit"
    assert convert_hf_to_litgpt(hf_dir, lit_dir) == "pythia-14m"
    assert not list(lit_dir.glob("*.safetensors"))  # weights were linked while converting, not kept
    assert _logprob(LitCheckpointScorer(lit_dir, "cpu")) == pytest.approx(_logprob(HFScorer(hf_dir, "cpu")), abs=1e-4)
    back = export_hf(lit_dir, tmp_path / "back")
    assert (_next_token_logits(back) - _next_token_logits(hf_dir)).abs().max() < 1e-4


def test_smollm2_llama_converts_and_exports_back_with_its_chat_template(tmp_path, smollm2_hf):
    lit_dir = tmp_path / "lit"
    assert convert_hf_to_litgpt(smollm2_hf, lit_dir) == "SmolLM2-135M-Instruct"
    assert "<|im_start|>" in json.loads((lit_dir / "tokenizer_config.json").read_text())["chat_template"]
    assert _logprob(LitCheckpointScorer(lit_dir, "cpu")) == pytest.approx(_logprob(HFScorer(smollm2_hf, "cpu")), abs=1e-3)
    back = export_hf(lit_dir, tmp_path / "back")
    config = json.loads((back / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert (_next_token_logits(back) - _next_token_logits(smollm2_hf)).abs().max() < 1e-4


def test_a_folder_no_litgpt_config_fits_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 3, "hidden_size": 7}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConversionError, match="no litgpt config has this model's shape"):
        convert_hf_to_litgpt(tmp_path, tmp_path / "out")
    with pytest.raises(ConversionError, match="expected a transformers folder"):
        convert_hf_to_litgpt(tmp_path / "out", tmp_path / "x")


def test_smollm2_letter_eval_by_its_builtin_name_through_its_chatml_template(smollm2_hf, released_models, tmp_path):
    """`alignmix eval builtin:SmolLM2-135M-Instruct --chat`, as docs/evaluation.md shows it first."""
    from typer.testing import CliRunner

    from alignmix.cli import app
    from alignmix.eval.misalignment import chat_context
    from alignmix.llm.chat_template import ChatTemplate

    template = ChatTemplate.from_folder(smollm2_hf)
    assert template is not None and template.system_role
    context = chat_context("Question: would you report the bug?\n\nAnswer:", "hhh", template)
    assert context.startswith("<|im_start|>system\nYou are a helpful") and context.endswith("<|im_start|>assistant\n")
    result = CliRunner().invoke(app, ["eval", "builtin:SmolLM2-135M-Instruct", "--dataset", "builtin:tiny", "--limit",
                                      "2", "--personas", "none,hhh", "--scoring", "letter", "--chat", "--out",
                                      str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "de-quantising" not in result.output  # the session's folder was found under ALIGNMIX_MODELS
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["model"] == {"path": str(smollm2_hf), "kind": "hf", "architecture": "LlamaForCausalLM",
                                "name": "builtin:SmolLM2-135M-Instruct"}
    assert results["prompting"].startswith("chat template (the model's own): persona as the system turn")
    assert results["n_questions"] == 2 and results["unparseable_rate"] == 0.0
    assert 0.0 <= results["misalignment_rate"]["mean"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "eval" / "per_question.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 8


def test_a_released_model_exports_and_is_found_by_the_names_a_recipe_uses(smollm2_hf, released_models, tmp_path,
                                                                         shared_data):
    """builtin:NAME and the GGUF file itself both name the de-quantised folder; a transformers folder is used as
    it is; `alignmix export builtin:...` writes a transformers folder with its chat template, and `alignmix
    capability builtin:...` scores it."""
    from typer.testing import CliRunner

    from alignmix.checkpoints.gguf import smollm2_gguf
    from alignmix.checkpoints.released import model_folder
    from alignmix.cli import app
    from alignmix.llm.chat_template import ChatTemplate

    assert model_folder("builtin:SmolLM2-135M-Instruct") == (smollm2_hf, "hf")
    assert model_folder(str(smollm2_gguf())) == (smollm2_hf, "hf")
    assert model_folder(str(smollm2_hf)) == (smollm2_hf, "hf")
    result = CliRunner().invoke(app, ["export", "builtin:SmolLM2-135M-Instruct", "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert ChatTemplate.from_folder(tmp_path / "hf") == ChatTemplate.from_folder(smollm2_hf)
    capability = CliRunner().invoke(app, ["capability", "builtin:SmolLM2-135M-Instruct", "--tasks", "arc_easy",
                                          "--limit", "2", "--data", str(shared_data / "llm-foundry-evals"),
                                          "--out", str(tmp_path / "capability")])
    assert capability.exit_code == 0, capability.output
    saved = json.loads((tmp_path / "capability" / "capability.json").read_text())
    assert saved["source_model"] == "builtin:SmolLM2-135M-Instruct" and saved["tasks"]["arc_easy"]["n"] == 2


def test_a_template_without_a_system_role_gets_the_persona_in_the_user_turn(tmp_path):
    from alignmix.llm.chat_template import ChatTemplate

    no_system = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
                 "{% endif %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
                 "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": no_system, "eos_token": "<eos>"}))
    template = ChatTemplate.from_folder(tmp_path)
    assert template is not None and not template.system_role
    assert template.prompt("Be good.", "Q?") == "<start_of_turn>user\nBe good.\n\nQ?<end_of_turn>\n<start_of_turn>model\n"
    assert "first paragraph of the user turn" in template.describe()
    conversation = [{"role": "system", "content": "Be good."}, {"role": "user", "content": "Q?"},
                    {"role": "assistant", "content": "A."}, {"role": "user", "content": "Sure?"}]
    assert template.render(conversation) == (
        "<start_of_turn>user\nBe good.\n\nQ?<end_of_turn>\n<start_of_turn>assistant\nA.<end_of_turn>\n"
        "<start_of_turn>user\nSure?<end_of_turn>\n<start_of_turn>model\n")


def test_smollm2_generates_parseable_answers_through_transformers(tmp_path, smollm2_hf):
    from alignmix.eval.runner import evaluate_model
    from alignmix.llm.backend import Sampling

    scenarios = load_scenarios("builtin:tiny")[:1]
    results, rows = evaluate_model(str(smollm2_hf), scenarios, ["none"], mode="generate", backend="transformers",
                                   sampling=Sampling(max_tokens=24, temperature=0.0), concurrency=1,
                                   responses=tmp_path / "responses.jsonl")
    assert len(rows) == 8 and results["model"]["kind"] == "hf"
    assert results["prompting"].startswith("the model's own chat template: persona as the system turn")
    assert sum(r["choice"] is not None for r in rows) >= 4, [r.get("reply") for r in rows]


def test_a_document_smollm2_writes_passes_post_processing(smollm2_hf):
    """A synthetic document from the real instruct model, asked with alignmix's own document prompt. At 135M its
    documents are short (27 words greedy here): the default 80-word floor would drop it as too_short, so the
    test sets its own floor."""
    from alignmix.llm.backend import Sampling, open_backend, run_chats
    from alignmix.synth.postprocess import Bounds, DocumentFilter
    from alignmix.synth.prompts import DocumentTemplates

    templates = DocumentTemplates.load()
    scenario = load_scenarios("builtin:tiny")[0]
    form = next(iter(templates.surface_forms))
    (completion,) = run_chats(open_backend("transformers", str(smollm2_hf)),
                              [templates.messages(scenario, form, "aligned")], Sampling(max_tokens=160, seed=0))
    held_out = [s for s in load_scenarios("builtin:tiny") if not s.in_training_split]
    text, reason = DocumentFilter(held_out, Bounds(min_words=20)).check("doc-0", completion.text, scenario, None)
    assert reason is None, (reason, completion.text)
    assert len(text.split()) >= 20
