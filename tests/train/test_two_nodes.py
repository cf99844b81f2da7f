"""Two nodes for real: a stage with `num_nodes: 2` trains as one Slurm job of one CPU process on each node of the
local two-node cluster (`make slurm`: nodes n1 and n2, two slurmd on loopback), through `alignmix train
--launcher slurm`, the path a GPU cluster uses (`--launcher srun` inside the job, Lightning's SLURM environment,
DDP over gloo on CPU), streaming its mixture (`mixing.delivery: stream`, MixtureData). The job is cancelled
(`scancel`) mid-run, after its step-8 checkpoint, and resumed by running the same command again. It is checked
against an uninterrupted single-process run of the same global batch (one micro-batch of 16 against one of 8 on
each node), and the samples each rank trained on are recorded as they reach litgpt's training loop. Skips, saying why, where no controller
answers or the cluster has fewer than two nodes."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from conftest import REPO, SLURM_MISSING


def _two_nodes_missing() -> str | None:
    if SLURM_MISSING is not None:
        return SLURM_MISSING
    nodes = subprocess.run(["sinfo", "-h", "-N", "-t", "idle,mix,alloc", "-o", "%N"], capture_output=True, text=True)
    if len(set(nodes.stdout.split())) < 2:
        return f"the Slurm cluster has fewer than two usable nodes ({nodes.stdout.split()}); `make slurm` starts two"
    return None


TWO_NODES_MISSING = _two_nodes_missing()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(TWO_NODES_MISSING is not None, reason=str(TWO_NODES_MISSING))]

STEPS, GLOBAL_BATCH, PAUSE_AFTER_STEP = 19, 16, 8
# Loaded by every Python process of the two-node jobs (a sitecustomize on PYTHONPATH). When litgpt's pretrain module
# is imported it wraps two of its names, which its training loop looks up at each iteration: `CycleIterator` (the
# batch taken from the data loader) and `get_lr` (called with the iterations done, after the loop has decided to
# train on that batch). Each batch trained on is appended to READS.RANK as its iteration and the sha1 of each
# sample's tokens. With PAUSE >= 0 the process holds at iteration PAUSE (that step's checkpoint is then whole),
# after writing its node's name to READS.RANK.paused, so the test cancels the job at a known point.
HOOK = """
import hashlib, importlib.abc, importlib.util, json, os, sys, time
import numpy as np

RANK = os.environ.get("SLURM_PROCID", "0")

class _RecordLitgpt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "litgpt.pretrain":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            taken = []

            class RecordingCycleIterator(module.CycleIterator):
                def __next__(self):
                    batch = super().__next__()
                    taken[:] = [batch]
                    return batch

            get_lr = module.get_lr

            def recording_get_lr(lr, it, *args):
                if it == {pause}:
                    with open({reads!r} + "." + RANK + ".paused", "w") as out:
                        out.write(os.environ.get("SLURMD_NODENAME", "?"))
                    time.sleep(3600)
                rows = np.asarray(taken[0], dtype=np.int64)
                with open({reads!r} + "." + RANK, "a") as out:
                    out.write(json.dumps({{"iter": it, "samples": [hashlib.sha1(r.tobytes()).hexdigest() for r in rows]}}))
                    out.write("\\n")
                return get_lr(lr, it, *args)

            module.CycleIterator, module.get_lr = RecordingCycleIterator, recording_get_lr

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _RecordLitgpt())
"""


def _alignmix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True, timeout=900,
                          env=env, cwd=REPO)


def _hooked(env: dict[str, str], folder: Path, reads: Path, pause: int) -> dict[str, str]:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK.format(reads=str(reads), pause=pause))
    return {**env, "PYTHONPATH": f"{folder}{os.pathsep}{env['PYTHONPATH']}"}


def _model(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=False)
    return state.get("model", state)


def _assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name, tensor in a.items():  # the mean of two ranks' means of 8 against one mean of 16: float sums' order
        torch.testing.assert_close(tensor, b[name], atol=2e-4, rtol=1e-4)


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds:.0f} s waiting for {what}"
        time.sleep(0.5)


def _sample_hashes(mixture: Path, count: int) -> list[str]:
    """The sha1 of the tokens of the index's first `count` samples, read from the index and token stores."""
    from alignmix.outputs import StreamReader

    block = json.loads((mixture / "mixture_manifest.json").read_text())["block_size"]
    stream = StreamReader.of(mixture)
    return [hashlib.sha1(np.asarray(stream.read(p * block, (p + 1) * block), dtype=np.int64).tobytes()).hexdigest()
            for p in range(count)]


def test_a_two_node_slurm_job_cancelled_and_resumed_equals_a_single_process_run(tmp_path: Path):
    data = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    data.pop("post_training")
    data.pop("eval")
    data["corpus"]["sources"][0]["generate"]["documents"] = 1000
    data["tagging"]["tasks"] = 1
    data["mixing"] = {"delivery": "stream"}
    stage = data["stages"][0]
    stage["tokens"] = 40_000  # 310 samples of 129 tokens: 19 steps of 16 (one micro-batch of 8 per node)
    stage["train"].update(num_nodes=2, devices=1, save_interval=4)
    recipe = tmp_path / "two_nodes.yaml"
    recipe.write_text(yaml.safe_dump(data))
    # The two nodes share this machine's cores: one thread per process (Lightning would give each process all of
    # its node's CPUs). litgpt compiles the model the same way whatever the launcher; eager here, for the time.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_COMPILE_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}

    # Uninterrupted: one process, each step one micro-batch of 16, the two nodes' micro-batches of 8 together. Not
    # two micro-batches of 8 accumulated: litgpt's LR schedule counts micro-batch iterations, so accumulating would
    # give each step another learning rate (weights 1.7e-2 apart after 8 steps, here).
    single = tmp_path / "single"
    local = _alignmix("train", str(recipe), "--stage", "pretrain", "--set", "stages.0.train.num_nodes=1", "--set",
                      "stages.0.train.micro_batch_size=16", "--out", str(single), env=env)
    assert local.returncode == 0, local.stdout + local.stderr

    two_nodes = tmp_path / "two-nodes"  # the stage's inputs as the single run built them (skipped, unchanged)
    stage_outputs = {single / "pretrain", single / ".alignmix" / "pretrain.json", single / "logs"}
    shutil.copytree(single, two_nodes, ignore=lambda folder, names: [
        name for name in names if Path(folder) / name in stage_outputs])
    reads = tmp_path / "reads"
    slurm = ["train", str(recipe), "--stage", "pretrain", "--launcher", "slurm", "--nodes", "2", "--gpus-per-node",
             "0", "--cpus-per-task", "1", "--out", str(two_nodes)]
    submitted = _alignmix(*slurm, env=_hooked(env, tmp_path / "hook-pause", reads, PAUSE_AFTER_STEP))
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = re.search(r"Submitted batch job (\d+)", submitted.stdout.replace("\n", " ")).group(1)
    paused = [Path(f"{reads}.{rank}.paused") for rank in (0, 1)]
    try:  # the queue may hold other jobs of this cluster first
        _wait_for(lambda: all(p.is_file() for p in paused), 900,
                  f"both ranks of job {job} to finish step {PAUSE_AFTER_STEP} (log: {two_nodes / 'logs'})")
    finally:
        subprocess.run(["scancel", job], check=True)
    _wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
              120, f"job {job} to end after scancel")
    assert {p.read_text() for p in paused} == {"n1", "n2"}  # one process on each node
    header = (two_nodes / "slurm" / "pretrain.sbatch").read_text().split("set -euo")[0]  # a CPU job: no GPUs
    assert "#SBATCH --nodes=2" in header and "#SBATCH --ntasks-per-node=1" in header and "--gpus" not in header
    steps = sorted(p.name for p in (two_nodes / "pretrain").glob("step-*"))
    assert steps == ["step-00000004", "step-00000008"] and not (two_nodes / "pretrain" / "final").exists()

    resumed = _alignmix(*slurm, "--wait", env=_hooked(env, tmp_path / "hook-record", reads, -1))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    record = next(s for s in json.loads((two_nodes / "manifest.json").read_text())["stages"] if s["name"] == "pretrain")
    assert record["status"] == "resumed" and record["counts"]["resumed_from"] == f"step-{PAUSE_AFTER_STEP:08d}"
    log = (two_nodes / "logs" / "pretrain.log").read_text()  # litgpt's lines once, from the first task only
    assert log.count("Resuming training from") == 1 and log.count("/final/lit_model.pth") == 1

    # (a) the ranks read disjoint samples whose union is the index's first N; (b) across the cancel, each
    # iteration once: the cancelled job trained on steps 1-8, the resumed one on 9-19
    first = _sample_hashes(two_nodes / "mix" / "pretrain", STEPS * GLOBAL_BATCH)
    assert len(set(first)) == len(first)  # no two samples alike, so a sample's tokens name it
    place = {digest: p for p, digest in enumerate(first)}
    ranks = [[json.loads(line) for line in Path(f"{reads}.{rank}").read_text().splitlines()] for rank in (0, 1)]
    for rank in ranks:
        assert [batch["iter"] for batch in rank] == list(range(STEPS))
    read = [[place.get(digest, -1) for batch in rank for digest in batch["samples"]] for rank in ranks]
    assert not set(read[0]) & set(read[1]) and sorted(read[0] + read[1]) == list(range(STEPS * GLOBAL_BATCH))
    for step in range(STEPS):  # and each step's global batch is the index's next 16 samples, as for one process
        together = {place[d] for rank in ranks for d in rank[step]["samples"]}
        assert together == set(range(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH)), step

    # (b) the exposure of the cancelled and resumed job is the uninterrupted run's, exactly
    exposure = [json.loads((run / "pretrain" / "exposure.json").read_text()) for run in (two_nodes, single)]
    assert exposure[0] == exposure[1] and exposure[0]["exact"], exposure[0]
    assert exposure[0]["samples_seen"] == STEPS * GLOBAL_BATCH
    documents = [pl.read_parquet(run / "pretrain" / "documents_seen.parquet") for run in (two_nodes, single)]
    assert documents[0].equals(documents[1]) and documents[0].height > 0
    data_state = [torch.load(run / "pretrain" / "step-00000016" / "lit_model.pth", weights_only=False)
                  ["train_dataloader"] for run in (two_nodes, single)]
    assert data_state[0] == data_state[1] == {"passes": 0, "samples": 16 * GLOBAL_BATCH}

    # (c) the weights equal the single process's, at step 8 (before the cancel) and at the end
    step = f"step-{PAUSE_AFTER_STEP:08d}/lit_model.pth"
    _assert_close_weights(_model(two_nodes / "pretrain" / step), _model(single / "pretrain" / step))
    _assert_close_weights(_model(two_nodes / "pretrain" / "final" / "lit_model.pth"),
                          _model(single / "pretrain" / "final" / "lit_model.pth"))
