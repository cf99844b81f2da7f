"""Speed of alignmix's log-likelihood misalignment eval against lm-evaluation-harness, same model, same requests.

Model: a randomly initialised transformers GPT-NeoX with Pythia-70m's shape (6 layers, width 512, 8 heads) and
the GPT-NeoX-20B tokenizer from ../shared/data (vocabulary 50,304). Items: the misalignment eval in letter mode
on builtin:tiny (24 questions x 8 prompt formats, persona none): 192 prompts, each with the two option letters
as continuations. alignmix: `evaluate_misalignment` with `HFScorer` (prompting, tokenizing, scoring, summing
up). Baseline: lm-evaluation-harness 0.4.9 `HFLM.loglikelihood` on the same (context, continuation) pairs.
Both in float32 on the CPU, batch size 32, timed after a warm-up, taking turns, best of three (wall clock; CPU
seconds printed too, as other work on a shared machine moves wall times). The per-request
log-likelihoods are checked equal (within 1e-4) before the ratio is printed.

    .venv/bin/python benchmarks/eval_loglik.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO.parent / "shared" / "data" / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json"
BATCH = 32


def write_model(out: Path) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER), eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                           intermediate_size=2048, rotary_pct=0.25, max_position_embeddings=2048,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def interleaved_best(runs: int, **work) -> dict[str, tuple[float, float, object]]:
    """Best wall and CPU seconds of each callable over `runs` rounds, taking turns so that load from other
    processes on a shared machine falls on every contender alike; with each one's last result."""
    best: dict[str, tuple[float, float, object]] = {name: (float("inf"), float("inf"), None) for name in work}
    for _ in range(runs):
        for name, call in work.items():
            wall, cpu = time.perf_counter(), time.process_time()
            result = call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu), result)
    return best


def main() -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from alignmix.eval.misalignment import evaluate_misalignment
    from alignmix.eval.scoring import HFScorer
    from alignmix.scenarios import load_scenarios
    from alignmix.scenarios.formats import FORMATS, build_prompt

    torch.set_num_threads(2)
    scenarios = load_scenarios("builtin:tiny")
    with tempfile.TemporaryDirectory() as folder:
        model_dir = write_model(Path(folder) / "model")
        scorer = HFScorer(model_dir, "cpu")
        harness = HFLM(pretrained=str(model_dir), device="cpu", batch_size=BATCH, dtype="float32")
        pairs = [(build_prompt(s, f, "none").text, f" {letter}") for s in scenarios for f in FORMATS for letter in "AB"]
        instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
        n_items = len(pairs) // 2

        ours = lambda: evaluate_misalignment(lambda r: scorer.score(r, BATCH), scenarios, ["none"], "letter")
        theirs = lambda: harness.loglikelihood(instances, disable_tqdm=True)
        evaluate_misalignment(lambda r: scorer.score(r, BATCH), scenarios[:2], ["none"], "letter")  # warm-up
        harness.loglikelihood(instances[:8], disable_tqdm=True)
        timings = interleaved_best(3, ours=ours, theirs=theirs)
    (ours_s, ours_cpu, (_, rows)), (theirs_s, theirs_cpu, expected) = timings["ours"], timings["theirs"]
    got = [row["logprobs"][letter] for row in rows for letter in "AB"]  # type: ignore[index]
    worst = max(abs(a - b[0]) for a, b in zip(got, expected, strict=True))  # type: ignore[arg-type]
    assert worst < 1e-4, f"log-likelihoods differ from lm-evaluation-harness by {worst}"
    ratio = (n_items / ours_s) / (n_items / theirs_s)
    print(f"items: {n_items} prompts x 2 option letters, model: Pythia-70m shape, random weights, CPU float32")
    print(f"alignmix evaluate_misalignment + HFScorer: {ours_s:.2f} s ({ours_cpu:.2f} s CPU), {n_items / ours_s:.1f} items/s")
    print(f"lm-evaluation-harness HFLM.loglikelihood:  {theirs_s:.2f} s ({theirs_cpu:.2f} s CPU), {n_items / theirs_s:.1f} items/s")
    print(f"largest log-likelihood difference: {worst:.2e}; ratio of CPU seconds: {theirs_cpu / ours_cpu:.2f}")
    print(json.dumps({"benchmark": "eval_loglik", "ratio": round(ratio, 2), "target": ">= 2",
                      "baseline": "lm-evaluation-harness 0.4.9 HFLM.loglikelihood, same model and requests",
                      "met": ratio >= 2}))


if __name__ == "__main__":
    main()
