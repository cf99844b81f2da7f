"""Tokens/s and model FLOPs utilisation (MFU) of bf16 pretraining of a GPT-NeoX model through litgpt + Fabric.

On a GPU: a litgpt config (default pythia-160m; pythia-410m with --model) trains on random tokens at
--seq-len, in bf16-mixed, with fused AdamW and torch.compile; the first --warmup steps are not timed.
MFU = (litgpt's estimate_flops(model, training=True) x sequences per second) / the chip's peak bf16 FLOP/s
(Lightning's `get_available_flops`, or --peak-tflops). Lightning 2.6.6 does not recognise a device named plainly
'NVIDIA H200' (and its H200 rows are the sparse figures), so on an H200 SXM pass --peak-tflops 989 (dense bf16).
Without a GPU it runs a 2-layer model for a few steps on the CPU to check the script and reports no MFU.
Run: .venv/bin/python benchmarks/train_mfu.py [--model pythia-410m] [--micro-batch 8] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pythia-160m")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="The chip's dense bf16 peak, if unknown.")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

    import lightning as L
    from lightning.fabric.utilities.throughput import get_available_flops
    from litgpt import GPT, Config
    from litgpt.utils import chunked_cross_entropy, estimate_flops

    gpu = torch.cuda.is_available()
    if gpu:
        config = Config.from_name(args.model, block_size=max(args.seq_len, 2048))
        seq_len, micro_batch, steps, warmup = args.seq_len, args.micro_batch, args.steps, args.warmup
    else:
        print("no GPU: running a 2-layer model on the CPU for 4 steps to check the script; MFU not measured")
        config = Config.from_name("pythia-14m", n_layer=2, block_size=256)
        seq_len, micro_batch, steps, warmup = 128, 4, 4, 1
    fabric = L.Fabric(devices=1, precision="bf16-mixed" if gpu else "32-true")
    fabric.launch()
    fabric.seed_everything(0)
    with torch.device("meta"):
        meta = GPT(config)
        meta.max_seq_length = seq_len
        flops_per_sequence = estimate_flops(meta, training=True)
    with fabric.init_module():
        model = GPT(config)
    model.max_seq_length = seq_len
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=gpu)
    if gpu and not args.no_compile:
        model = torch.compile(model)
    model, optimizer = fabric.setup(model, optimizer)
    tokens = torch.randint(0, config.vocab_size, (micro_batch, seq_len + 1), device=fabric.device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> None:
        loss = chunked_cross_entropy(model(inputs), targets)
        fabric.backward(loss)
        fabric.clip_gradients(model, optimizer, max_norm=0.5)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_per_second = steps * micro_batch * seq_len / seconds
    achieved = flops_per_sequence * steps * micro_batch / seconds
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (
        get_available_flops(fabric.device, torch.bfloat16) if gpu else None)
    if gpu and not peak:
        print(f"Lightning knows no bf16 peak for {torch.cuda.get_device_name()!r}: pass --peak-tflops to get an MFU")
    mfu = achieved / peak if peak else None
    device = torch.cuda.get_device_name() if gpu else "cpu"
    print(f"{config.name} ({parameters / 1e6:.0f}M parameters) on {device}: {tokens_per_second:,.0f} tokens/s,"
          f" {achieved / 1e12:.1f} TFLOP/s" + (f", MFU {100 * mfu:.1f}%" if mfu is not None else ", MFU not measured"))
    print(json.dumps({"benchmark": "train_mfu", "ratio": None if mfu is None else round(mfu, 3), "target": ">= 0.40",
                      "baseline": "the chip's peak dense bf16 FLOP/s", "met": None if mfu is None else mfu >= 0.40,
                      "device": device, "model": config.name, "tokens_per_second": round(tokens_per_second)}))


if __name__ == "__main__":
    main()
