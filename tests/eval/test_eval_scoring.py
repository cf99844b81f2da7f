"""Log-likelihood scoring: equal to lm-evaluation-harness, one forward pass for both option letters."""

from pathlib import Path

import pytest

from alignmix.eval.scoring import (
    HFScorer,
    LitCheckpointScorer,
    ScoreRequest,
    ScorerError,
    open_scorer,
)
from alignmix.scenarios import load_scenarios
from alignmix.scenarios.formats import FORMATS, build_prompt


def _requests() -> list[ScoreRequest]:
    """The eval's own prompts: both letters and both option texts after each of a few prompts."""
    requests = []
    for scenario in load_scenarios("builtin:tiny")[:3]:
        for prompt_format in FORMATS[:4]:
            prompt = build_prompt(scenario, prompt_format, "hhh")
            requests += [ScoreRequest(prompt.text, " A"), ScoreRequest(prompt.text, " B")]
            requests += [ScoreRequest(prompt.text, f" {scenario.options[prompt.shown[k]]}") for k in "AB"]
    return requests + [ScoreRequest("Trailing space ", "moves into the continuation")]


def test_loglikelihoods_equal_lm_evaluation_harness(tiny_checkpoint: Path, hf_dir: Path):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    requests = _requests()
    harness = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=8, dtype="float32")
    expected = harness.loglikelihood(
        [Instance("loglikelihood", {}, (r.context, r.continuation), i) for i, r in enumerate(requests)],
        disable_tqdm=True,
    )
    for scorer in (LitCheckpointScorer(tiny_checkpoint, "cpu"), HFScorer(hf_dir, "cpu")):
        for ours, (logprob, greedy) in zip(scorer.score(requests, batch_size=5), expected, strict=True):
            assert ours.logprob == pytest.approx(logprob, abs=1e-4)
            assert ours.greedy == greedy


def test_both_letters_share_one_forward_pass(tiny_checkpoint: Path):
    scorer = LitCheckpointScorer(tiny_checkpoint, "cpu")
    rows = []
    forward = scorer.hidden_states
    scorer.hidden_states = lambda ids, mask: rows.append(ids.shape[0]) or forward(ids, mask)  # type: ignore[method-assign]
    prompts = [build_prompt(s, FORMATS[0], "none").text for s in load_scenarios("builtin:tiny")]
    # this tiny BPE has a token for " A" but spells " B" as " " + "B": the " A" input is a prefix of the " B" one
    assert [len(scorer.encode_batch([f"Answer: {x}"])[0]) for x in "AB"] == [5, 6]
    letters = scorer.score([ScoreRequest(p, f" {x}") for p in prompts for x in "AB"])
    assert sum(rows) == len(prompts) and len(letters) == 2 * len(prompts)
    one_by_one = [scorer.score([ScoreRequest(p, f" {x}")])[0].logprob for p in prompts[:2] for x in "AB"]
    assert [s.logprob for s in letters[:4]] == pytest.approx(one_by_one, abs=1e-5)
    rows.clear()
    texts = [ScoreRequest(prompts[0], " shut down as asked"), ScoreRequest(prompts[0], " copy its weights")]
    scorer.score(texts)  # continuations that differ before their last token need a pass each
    assert sum(rows) == 2


def test_truncation_keeps_the_end_of_long_contexts(tiny_checkpoint: Path):
    scorer = LitCheckpointScorer(tiny_checkpoint, "cpu")
    long_context = "The assistant answered the question honestly. " * 80
    (score,) = scorer.score([ScoreRequest(long_context, " It complied.")])
    assert score.truncated and score.tokens > 0


def test_folder_kinds_are_recognised(tiny_checkpoint: Path, hf_dir: Path, tmp_path: Path):
    assert isinstance(open_scorer(tiny_checkpoint, "cpu"), LitCheckpointScorer)
    assert isinstance(open_scorer(hf_dir, "cpu"), HFScorer)
    with pytest.raises(ScorerError, match="neither a litgpt checkpoint"):
        open_scorer(tmp_path)


def test_final_logit_softcapping_is_applied_once(tiny_checkpoint: Path, tmp_path: Path):
    import shutil

    import torch
    import yaml
    from litgpt import GPT, Config

    capped = tmp_path / "capped"
    shutil.copytree(tiny_checkpoint, capped)
    config = yaml.safe_load((capped / "model_config.yaml").read_text())
    (capped / "model_config.yaml").write_text(yaml.safe_dump({**config, "final_logit_softcapping": 0.5}))
    scorer = LitCheckpointScorer(capped, "cpu")
    request = ScoreRequest("Question: should the AI report the bug?\n\nAnswer:", " yes, it should")
    encoded = scorer._encode([request])[0]
    model = GPT(Config.from_file(capped / "model_config.yaml"))
    model.load_state_dict(torch.load(capped / "lit_model.pth", weights_only=True))
    with torch.inference_mode():
        logits = model.eval()(torch.tensor([encoded.context + encoded.continuation]))[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(encoded.context) - 1
    expected = sum(logprobs[start + i, t].item() for i, t in enumerate(encoded.continuation))
    assert scorer.score([request])[0].logprob == pytest.approx(expected, abs=1e-4)


def test_a_chat_reply_keeps_the_template_newline_in_the_context(tmp_path: Path):
    from alignmix.eval.misalignment import chat_context
    from alignmix.llm.chat_template import ChatTemplate
    from alignmix.train.chat import install_chat_tokenizer
    from tests.tiny_checkpoints import CHAT_READY, write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path, config=CHAT_READY)
    install_chat_tokenizer(checkpoint, checkpoint, CHAT_READY["padded_vocab_size"], "dpo")
    scorer = LitCheckpointScorer(checkpoint, "cpu")
    context = chat_context("Question: would you report the bug?\n\nAnswer:", "hhh", ChatTemplate.from_folder(checkpoint))
    assert context.startswith("<|system|>\nYou are a helpful") and context.endswith("Answer:\n<|assistant|>\n")
    encoded = scorer._encode([ScoreRequest(context, "report it", reply=True)])[0]
    assert encoded.context == scorer.encode_batch([context])[0] and scorer.encode_batch(["\n"])[0][-1] == encoded.context[-1]
    assert encoded.continuation == scorer.encode_batch(["report it"])[0]
    moved = scorer._encode([ScoreRequest(context, "report it")])[0]  # the base-model rule would move the newline
    assert moved.continuation != encoded.continuation
