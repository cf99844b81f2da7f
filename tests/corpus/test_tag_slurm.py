"""`alignmix tag --executor slurm` on a real Slurm controller (`make slurm`): datatrove's Slurm executor runs the
tasks as an array job, alignmix waits for it and its stats merge, and the output equals the local executor's."""

import json
from pathlib import Path

import pytest
from conftest import SLURM_MISSING

from tests.corpus.test_tag_cli import alignmix, docs_in

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(SLURM_MISSING is not None, reason=str(SLURM_MISSING))]


def test_tagging_on_slurm_equals_the_local_executor(tmp_path: Path, shared_data: Path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rows = [json.loads(line) for line in (shared_data / "llama-factory-demo" / "c4_demo.jsonl").read_text().splitlines()]
    for part in range(2):
        (inputs / f"part{part}.jsonl").write_text("".join(
            json.dumps({"id": f"c4-{part}-{i}", "text": r["text"]}) + "\n" for i, r in enumerate(rows[part * 50:(part + 1) * 50])))
    outputs = {}
    for executor in ("slurm", "local"):
        result = alignmix("tag", str(inputs), "--output", str(tmp_path / executor), "--executor", executor,
                          "--tasks", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        outputs[executor] = (json.loads((tmp_path / executor / "stats.json").read_text()), docs_in(tmp_path / executor))
    assert (tmp_path / "slurm" / "logs" / "launch_script.slurm").is_file()  # it ran as a Slurm job
    assert outputs["slurm"] == outputs["local"]
    assert outputs["slurm"][0]["documents_in"] == 100
