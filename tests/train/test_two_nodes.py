"""Two nodes for real: a stage with `num_nodes: 2` trains as one Slurm job of one CPU process on each node of the
local two-node cluster (`make slurm`: nodes n1 and n2, two slurmd on loopback), through `alignmix train
--launcher slurm`, the path a GPU cluster uses (`--launcher srun` inside the job, Lightning's SLURM environment,
DDP over gloo on CPU). The job is cancelled (`scancel`) mid-run, after its step-8 checkpoint, and resumed by
running the same command again. The check is against an uninterrupted single-node run of the same global batch
(one node, two processes): the same weights at step 8 and at the end, and the same exposure. Skips, saying why,
where no controller answers or the cluster has fewer than two nodes."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

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


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_two_nodes_missing() is not None, reason=str(_two_nodes_missing()))]

PAUSE_AFTER_STEP = 8
# Loaded by every Python process of the first job (PYTHONPATH): when litgpt's pretrain module is imported, its
# learning-rate function (called at the start of each iteration with the iterations done) holds the process once
# PAUSE_AFTER_STEP iterations are done (one per optimizer step here), after writing which node and rank it is.
# The step checkpoint of that step is then whole, and the test cancels the job at a known point.
PAUSE_HOOK = """
import importlib.abc, importlib.util, os, sys, time
from pathlib import Path

class _PauseLitgpt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "litgpt.pretrain":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            get_lr = module.get_lr

            def paused_get_lr(lr, it, *args):
                if it == {step}:
                    rank = os.environ.get("SLURM_PROCID", "0")
                    Path({marker!r} + "." + rank).write_text(os.environ.get("SLURMD_NODENAME", "?"))
                    time.sleep(3600)
                return get_lr(lr, it, *args)

            module.get_lr = paused_get_lr

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _PauseLitgpt())
"""


def _alignmix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True, timeout=900,
                          env=env, cwd=REPO)


def _model(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=False)
    return state.get("model", state)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name, tensor in a.items():  # gloo's all-reduce over two nodes or within one: the same sums
        torch.testing.assert_close(tensor, b[name], atol=1e-5, rtol=1e-4)


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds:.0f} s waiting for {what}"
        time.sleep(0.5)


def test_a_two_node_slurm_job_cancelled_and_resumed_equals_a_single_node_run(tmp_path: Path):
    data = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    data.pop("post_training")
    data.pop("eval")
    data["corpus"]["sources"][0]["generate"]["documents"] = 1000
    data["tagging"]["tasks"] = 1
    stage = data["stages"][0]
    stage["tokens"] = 40_000  # 310 samples of 129 tokens: 19 steps of 16 (one micro-batch of 8 per process)
    stage["train"].update(num_nodes=2, devices=1, save_interval=4)
    recipe = tmp_path / "two_nodes.yaml"
    recipe.write_text(yaml.safe_dump(data))
    # The two nodes share this machine's cores: one thread per process (Lightning would give each process all of
    # its node's CPUs). litgpt compiles the model the same way whatever the launcher; eager here, for the time.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_COMPILE_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}

    one_node = tmp_path / "one-node"  # uninterrupted: one node, two processes, the same global batch
    local = _alignmix("train", str(recipe), "--stage", "pretrain", "--set", "stages.0.train.num_nodes=1", "--set",
                      "stages.0.train.devices=2", "--out", str(one_node), env=env)
    assert local.returncode == 0, local.stdout + local.stderr

    two_nodes = tmp_path / "two-nodes"  # the stage's inputs as the one-node run built them (skipped, unchanged)
    stage_outputs = {one_node / "pretrain", one_node / ".alignmix" / "pretrain.json", one_node / "logs"}
    shutil.copytree(one_node, two_nodes, ignore=lambda folder, names: [
        name for name in names if Path(folder) / name in stage_outputs])
    hook = tmp_path / "hook"
    hook.mkdir()
    marker = tmp_path / "paused"
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK.format(step=PAUSE_AFTER_STEP, marker=str(marker)))
    slurm = ["train", str(recipe), "--stage", "pretrain", "--launcher", "slurm", "--nodes", "2", "--gpus-per-node",
             "0", "--cpus-per-task", "1", "--out", str(two_nodes)]
    submitted = _alignmix(*slurm, env={**env, "PYTHONPATH": f"{hook}{os.pathsep}{env['PYTHONPATH']}"})
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = re.search(r"Submitted batch job (\d+)", submitted.stdout.replace("\n", " ")).group(1)
    try:
        _wait_for(lambda: all(Path(f"{marker}.{rank}").is_file() for rank in (0, 1)), 900,
                  f"both ranks of job {job} to finish step {PAUSE_AFTER_STEP} (log: {two_nodes / 'logs'})")
    finally:
        subprocess.run(["scancel", job], check=True)
    _wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
              120, f"job {job} to end after scancel")
    assert {Path(f"{marker}.{rank}").read_text() for rank in (0, 1)} == {"n1", "n2"}  # one process on each node
    script = (two_nodes / "slurm" / "pretrain.sbatch").read_text()
    header = script.split("set -euo")[0]  # a CPU job: one task per node, no GPUs requested
    assert "#SBATCH --nodes=2" in header and "#SBATCH --ntasks-per-node=1" in header and "--gpus" not in header
    steps = sorted(p.name for p in (two_nodes / "pretrain").glob("step-*"))
    assert steps == ["step-00000004", "step-00000008"] and not (two_nodes / "pretrain" / "final").exists()

    resumed = _alignmix(*slurm, "--wait", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    manifest = json.loads((two_nodes / "manifest.json").read_text())
    record = next(s for s in manifest["stages"] if s["name"] == "pretrain")
    assert record["status"] == "resumed" and record["counts"]["resumed_from"] == f"step-{PAUSE_AFTER_STEP:08d}"

    step = f"step-{PAUSE_AFTER_STEP:08d}/lit_model.pth"  # written by the cancelled job
    _assert_same_weights(_model(two_nodes / "pretrain" / step), _model(one_node / "pretrain" / step))
    _assert_same_weights(_model(two_nodes / "pretrain" / "final" / "lit_model.pth"),
                         _model(one_node / "pretrain" / "final" / "lit_model.pth"))
    data_state = [torch.load(run / "pretrain" / "step-00000016" / "lit_model.pth", weights_only=False)
                  ["train_dataloader"] for run in (two_nodes, one_node)]
    for state in data_state:  # where LitData stands after step 16 (resumed at 8 on two nodes), path aside
        state["dataset"].pop("input_dir_path")
    assert data_state[0] == data_state[1] and data_state[0]["dataset"]["world_size"] == 2
    log = (two_nodes / "logs" / "pretrain.log").read_text()  # litgpt's lines once, from the first task only
    assert log.count("Resuming training from") == 1 and log.count("/final/lit_model.pth") == 1
    exposure = [json.loads((run / "pretrain" / "exposure.json").read_text()) for run in (two_nodes, one_node)]
    assert exposure[0] == exposure[1] and exposure[0]["samples_seen"] == 19 * 16
