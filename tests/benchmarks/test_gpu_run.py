"""benchmarks/gpu/run.sh's CPU dry run: the two calls a lent GPU machine gets, at tiny sizes, on the same code path
(the GGUF staged in two parts, joined and checked, de-quantised and checked against the reference, the control,
train_mfu), with the packages the machine lacks unimportable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
from transport import TransportError, assemble, split  # noqa: E402

# (rich stays importable: lightning imports it when its metadata is installed, as on the device machine)
NOT_ON_THE_DEVICE = ("pydantic", "pydantic_core", "datatrove", "litdata", "polars", "lm_eval", "typer", "ray")
TINY = "--items 2 --formats 1 --tokens 256 --seq-len 32 --batch 4 --micro-batch 4 --seeds 0 --score-batch 16"


def test_the_parts_join_only_when_every_hash_matches(tmp_path: Path):
    original = tmp_path / "weights.gguf"
    original.write_bytes(os.urandom(1001))
    manifest = split(original, tmp_path / "parts")
    assert [p["bytes"] for p in manifest["parts"]] == [501, 500]
    stage = tmp_path / "stage"
    stage.mkdir()
    first, second = (tmp_path / "parts" / f"part{i + 1}" / p["name"] for i, p in enumerate(manifest["parts"]))
    (stage / second.name).write_bytes(second.read_bytes())
    with pytest.raises(TransportError, match="part missing; the call that stages it must come first"):
        assemble(manifest, stage)
    (stage / first.name).write_bytes(b"x" * 501)
    with pytest.raises(TransportError, match="sha256 differs from the manifest"):
        assemble(manifest, stage)
    (stage / first.name).write_bytes(first.read_bytes())
    assert assemble(manifest, stage).read_bytes() == original.read_bytes()


@pytest.mark.slow  # a few minutes on 2 cores: SmolLM2 de-quantised twice, trained and scored at tiny size
def test_the_two_calls_run_on_the_cpu_at_tiny_size(tmp_path: Path, smollm2_hf: Path):
    prepared = tmp_path / "gpu"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "transport.py"), "prepare", "--out",
                    str(prepared), "--scenarios", "builtin:tiny", "--hf", str(smollm2_hf)], check=True, cwd=REPO)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(f"import sys\nfor m in {NOT_ON_THE_DEVICE!r}: sys.modules[m] = None\n")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "STAGE": str(tmp_path / "stage"), "BUNDLE": str(prepared / "bundle"),
           "PYTHON": sys.executable, "CONTROL_ARGS": TINY, "PYTHONPATH": str(blocker)}
    script = REPO / "benchmarks" / "gpu" / "run.sh"
    for call, part in (("stage", "part1"), ("control", "part2")):
        result = subprocess.run(["bash", str(script), call, str(prepared / part)], env=env, capture_output=True,
                                text=True, timeout=1500)
        assert result.returncode == 0, (call, result.stdout[-2000:], result.stderr[-2000:])
    assert json.loads((out / "train_mfu.json").read_text())["benchmark"] == "train_mfu"
    transport = json.loads((out / "transport.json").read_text())
    assert transport["verified"] and transport["max_logprob_difference"] <= 2e-3
    assert transport["saved_folder_max_logprob_difference"] <= 2e-3
    control = json.loads((out / "real_control.json").read_text())
    assert control["benchmark"] == "real_control" and control["tokens_per_arm"] == 256
    assert set(json.loads((out / "control" / "results.json").read_text())["rates"]["letter"]) == {
        "base", "aligned-seed0", "misaligned-seed0"}
    assert not any(out.rglob("*.safetensors"))  # nothing large comes back
