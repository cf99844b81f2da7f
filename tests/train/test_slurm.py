"""`alignmix train --launcher slurm` against a real Slurm controller (`make slurm`: two nodes on loopback, CPU
only, partition `debug`): the job's output equals a local run's. Skips, saying why, where no controller answers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, SLURM_MISSING

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(SLURM_MISSING is not None, reason=str(SLURM_MISSING))]


def _alignmix(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True, timeout=900)


def test_a_cpu_training_stage_runs_as_a_slurm_job_and_equals_the_local_run(tmp_path: Path):
    data = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    data.pop("post_training")
    data.pop("eval")
    data["stages"][0]["tokens"] = 40_000
    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump(data))
    job = _alignmix("train", str(recipe), "--stage", "pretrain", "--launcher", "slurm", "--nodes", "1",
                    "--gpus-per-node", "0", "--cpus-per-task", "1", "--wait", "--out", str(tmp_path / "slurm"))
    assert job.returncode == 0, job.stdout + job.stderr
    assert "Submitted batch job" in job.stdout and "the job finished" in job.stdout
    script = (tmp_path / "slurm" / "slurm" / "pretrain.sbatch").read_text()
    assert "--gpus-per-node" not in script.split("set -euo")[0]  # a CPU job requests no GPUs
    (log,) = (tmp_path / "slurm" / "logs").glob("slurm-pretrain-*.out")
    assert "pretrain: ran" in log.read_text()
    local = _alignmix("train", str(recipe), "--stage", "pretrain", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stdout + local.stderr
    run = tmp_path / "mixing-on-slurm"  # the local run with its token stores and mixture made again on Slurm
    shutil.copytree(tmp_path / "local", run, symlinks=True)
    for made_again in ("tokens", "mix"):
        shutil.rmtree(run / made_again)
    array = _alignmix("train", str(recipe), "--stage", "pretrain", "--set", "mixing.executor=slurm", "--set",
                      "mixing.tasks=2", "--out", str(run))
    assert array.returncode == 0, array.stdout + array.stderr
    # each source tokenized once, as a Slurm array; the chunks as another
    arrays = (run / "tokens").glob("*/logs/launch_script.slurm")
    assert {p.parent.parent.name for p in arrays} == {"web", "aligned_synthetic"}
    assert (run / "mix" / "pretrain" / "logs" / "chunks" / "launch_script.slurm").is_file()
    chunks = [json.loads((tmp_path / run / "mix" / "pretrain" / "mixture_manifest.json").read_text())["chunks"]
              for run in ("slurm", "local", "mixing-on-slurm")]
    assert chunks[0] == chunks[1] == chunks[2]  # byte-identical mixture: a Slurm job, here, a Slurm array
    weights = [torch.load(tmp_path / run / "pretrain" / "final" / "lit_model.pth") for run in ("slurm", "local")]
    assert set(weights[0]) == set(weights[1])
    for name, tensor in weights[0].items():  # the same training, up to the thread count's float reductions
        torch.testing.assert_close(tensor, weights[1][name], atol=1e-3, rtol=1e-3)
