"""Overhead of `alignmix train` over a plain `litgpt pretrain --config` with the same generated config.

A copy of recipes/tiny.yaml with a pretraining stage of 100,000 tokens (where alignmix's fixed costs per stage
weigh most) and one of 1,000,000 tokens (where the cost per step dominates) is run once to build its inputs
(corpus, tag, synth, tokenizer, mixture chunks) and to write `pretrain/pretrain.yaml`. Then, in the same run and
alternating the order (A B, B A, A B):
  alignmix: `alignmix train RECIPE --stage pretrain` with the stage's output removed (inputs reused, training runs);
  baseline: `python -m litgpt pretrain --config` with the same generated config, into a fresh folder.
The same pair is then timed for a run that continues a released model (`base_model:` a random GPT-NeoX of
pythia-14m's shape saved as transformers saves Pythia, with the GPT-NeoX-20B tokenizer from ../shared/data;
BASE_TOKENS tokens): `alignmix train` (which converts the base once into RUN/base/ before the timed runs) against
`litgpt pretrain --config` whose `initial_checkpoint_dir` is that converted checkpoint, on the same chunks.
Both run with OMP_NUM_THREADS=1 (torch's spinning threads make timings on a busy 2-core machine erratic).
The ratio is of the median wall times (robust to other work on a shared machine); the ratio of summed wall
times and of summed CPU times (user + system of the child processes) are printed too.
Run: .venv/bin/python benchmarks/train_overhead.py

With `--stream`: streaming against litgpt's own LitData module. The tiny recipe's pretraining stage (STREAM_TOKENS
tokens) is mixed once (chunks and index) and trained once to write its config; then, alternating the order,
`litgpt pretrain --config` with `data: litgpt.data.LitData` on the chunks and with `data:
alignmix.train.data.MixtureData` on the same mixture's index (the same samples; LitData shuffles them, MixtureData
reads them in index order), same model and steps. The ratio is LitData's median wall time over MixtureData's (a
throughput ratio: >= 1 means streaming is as fast); the loaders alone (one pass, no model) are timed too.
Run: .venv/bin/python benchmarks/train_overhead.py --stream
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SIZES = (100_000, 1_000_000)
BASE_TOKENS = 20_000
STREAM_TOKENS = 300_000
SHARED_TOKENIZER = REPO.parent / "shared" / "data" / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json"


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(root: Path, recipe: dict, stage: str, tokens: int) -> dict[str, float]:
    """Ratios of `alignmix train` over plain litgpt on the config alignmix generated: median wall, summed wall
    and summed CPU time."""
    recipe_file = root / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    run_dir = root / "run"
    train = [sys.executable, "-m", "alignmix", "train", str(recipe_file), "--stage", stage, "--out", str(run_dir)]
    print(f"building inputs and a first training run in {run_dir} ...", flush=True)
    timed(train)
    config = yaml.safe_load((run_dir / stage / "pretrain.yaml").read_text())
    times: dict[str, list[tuple[float, float]]] = {"alignmix": [], "litgpt": []}
    for round_number, order in enumerate((("alignmix", "litgpt"), ("litgpt", "alignmix"), ("alignmix", "litgpt"))):
        for which in order:
            if which == "alignmix":
                shutil.rmtree(run_dir / stage)
                (run_dir / ".alignmix" / f"{stage}.json").unlink()
                seconds = timed(train)
            else:
                out = root / f"litgpt-{round_number}"
                config_file = root / f"litgpt-{round_number}.yaml"
                config_file.write_text(yaml.safe_dump({**config, "out_dir": str(out)}, sort_keys=False))
                seconds = timed([sys.executable, "-m", "litgpt", "pretrain", "--config", str(config_file)])
            times[which].append(seconds)
            print(f"  {which}: {seconds[0]:.2f} s wall, {seconds[1]:.2f} s CPU", flush=True)
    wall = {k: [t[0] for t in v] for k, v in times.items()}
    cpu = {k: sum(t[1] for t in v) for k, v in times.items()}
    ratios = {
        "median_wall": round(statistics.median(wall["alignmix"]) / statistics.median(wall["litgpt"]), 3),
        "summed_wall": round(sum(wall["alignmix"]) / sum(wall["litgpt"]), 3),
        "cpu": round(cpu["alignmix"] / cpu["litgpt"], 3),
    }
    print(f"median wall: alignmix train {statistics.median(wall['alignmix']):.2f} s, litgpt pretrain"
          f" {statistics.median(wall['litgpt']):.2f} s (3 runs each, {tokens:,} tokens): ratio {ratios['median_wall']:.3f};"
          f" summed wall ratio {ratios['summed_wall']:.3f}, CPU ratio {ratios['cpu']:.3f}", flush=True)
    shutil.rmtree(root)
    return ratios


def pythia_shaped_base(out_dir: Path) -> Path:
    """A random GPT-NeoX of pythia-14m's shape in the transformers layout, with the GPT-NeoX-20B tokenizer."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
                           intermediate_size=512, rotary_pct=0.25, max_position_embeddings=512)
    GPTNeoXForCausalLM(config).save_pretrained(out_dir / "pythia-14m")
    PreTrainedTokenizerFast(tokenizer_file=str(SHARED_TOKENIZER), eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(out_dir / "pythia-14m")
    return out_dir / "pythia-14m"


def loader_seconds(data: dict, micro_batch: int, seq_len: int) -> tuple[float, int]:
    """Wall seconds of one pass of a data module's train loader, with no model, and the batches read."""
    from jsonargparse import ArgumentParser
    from litgpt.data import DataModule

    parser = ArgumentParser()
    parser.add_argument("--data", type=DataModule)
    module = parser.instantiate_classes(parser.parse_object({"data": data})).data
    module.connect(batch_size=micro_batch, max_seq_length=seq_len)
    module.setup()
    start = time.perf_counter()
    batches = sum(1 for _ in module.train_dataloader())
    return time.perf_counter() - start, batches


def stream_compare(root: Path, recipe: dict) -> dict:
    """LitData on the chunks against MixtureData on the index of one mixture: median wall time of the same
    litgpt pretrain config, alternating, and one pass of each loader alone."""
    recipe["stages"][0]["tokens"] = STREAM_TOKENS
    recipe_file = root / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    run_dir = root / "run"
    print(f"building the mixture and a first training run in {run_dir} ...", flush=True)
    timed([sys.executable, "-m", "alignmix", "train", str(recipe_file), "--stage", "pretrain", "--out", str(run_dir)])
    config = yaml.safe_load((run_dir / "pretrain" / "pretrain.yaml").read_text())
    mixture = str(run_dir / "mix" / "pretrain")
    data = {"litdata": config["data"],
            "stream": {"class_path": "alignmix.train.data.MixtureData", "init_args": {"mixture": mixture,
                                                                                     "num_workers": 0}}}
    train = config["train"]
    for which, module in data.items():
        seconds, batches = loader_seconds(module, train["micro_batch_size"], train["max_seq_length"])
        print(f"  {which} loader alone: {batches} batches in {seconds:.3f} s", flush=True)
    wall: dict[str, list[float]] = {"litdata": [], "stream": []}
    for round_number, order in enumerate((("litdata", "stream"), ("stream", "litdata"), ("litdata", "stream"))):
        for which in order:
            config_file = root / f"{which}-{round_number}.yaml"
            config_file.write_text(yaml.safe_dump({**config, "data": data[which], "out_dir": str(root / config_file.stem)},
                                                  sort_keys=False))
            seconds = timed([sys.executable, "-m", "litgpt", "pretrain", "--config", str(config_file)])[0]
            wall[which].append(seconds)
            print(f"  {which}: {seconds:.2f} s wall", flush=True)
    ratio = round(statistics.median(wall["litdata"]) / statistics.median(wall["stream"]), 3)
    print(f"median wall: LitData {statistics.median(wall['litdata']):.2f} s, MixtureData"
          f" {statistics.median(wall['stream']):.2f} s (3 runs each, {STREAM_TOKENS:,} tokens): ratio {ratio:.3f}")
    shutil.rmtree(root)
    return {"benchmark": "train_overhead_stream", "ratio": ratio, "target": ">= 0.98",
            "ratio_is": "LitData's median wall time over MixtureData's, same config, samples, model and steps",
            "baseline": "litgpt pretrain with litgpt.data.LitData on the mixture's chunks", "met": ratio >= 0.98}


def main() -> None:
    recipe = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    recipe["stages"][0]["train"]["save_interval"] = 10_000
    for entry in recipe["stages"][0]["mixture"]:  # the largest size repeats the tiny corpus's documents
        entry["max_repetitions"] = 8
    recipe.pop("post_training")
    recipe.pop("eval")
    if "--stream" in sys.argv[1:]:
        print(json.dumps(stream_compare(Path(tempfile.mkdtemp(prefix="train_overhead_stream_")), recipe)))
        return
    sizes: dict[str, dict[str, float]] = {}
    for tokens in SIZES:
        recipe["stages"][0]["tokens"] = tokens
        print(f"{tokens:,} tokens:", flush=True)
        sizes[f"{tokens}"] = compare(Path(tempfile.mkdtemp(prefix="train_overhead_")), recipe, "pretrain", tokens)
    if SHARED_TOKENIZER.is_file():
        print("continuing a base model:", flush=True)
        root = Path(tempfile.mkdtemp(prefix="train_overhead_base_"))
        recipe["base_model"] = {"path": str(pythia_shaped_base(root.parent / f"{root.name}-model"))}
        recipe.pop("tokenizer")
        recipe["stages"][0].update(tokens=BASE_TOKENS, seq_len=128)
        recipe["stages"][0]["train"].pop("model")
        sizes[f"base_model_{BASE_TOKENS}"] = compare(root, recipe, "pretrain", BASE_TOKENS)
    else:
        print(f"skipping the base-model pair: {SHARED_TOKENIZER} is absent")
    worst = max(max(r["median_wall"], r["cpu"]) for r in sizes.values())
    print(json.dumps({"benchmark": "train_overhead", "ratio": worst, "target": "<= 1.05",
                      "ratio_is": "the worst median-wall or CPU ratio over the sizes", "sizes": sizes,
                      "baseline": "plain litgpt pretrain --config with the same generated config (and, continuing a"
                                  " base, the same initial_checkpoint_dir)",
                      "met": worst <= 1.05}))


if __name__ == "__main__":
    main()
