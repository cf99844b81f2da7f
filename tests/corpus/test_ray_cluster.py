"""Tagging and mixing on a real two-node Ray cluster on this machine (`ray start --head` and a second
`ray start --address`, each with its own temp dir, on loopback): the output equals the local executor's."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.corpus.test_tag_cli import alignmix, docs_in

ray = pytest.importorskip("ray")
PORT = "6391"


def _ray(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], capture_output=True, text=True,
                          env=env, timeout=180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict]:
    """RAY_ADDRESS of a head and a second node, one CPU each; stopped after the module."""
    if ray.is_initialized():  # `ray stop` below would kill this process's own local cluster, and with it pytest
        ray.shutdown()
    root = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    head = _ray("start", "--head", "--port", PORT, "--include-dashboard", "false", "--temp-dir", str(root / "head"),
                *common, env=env)
    if head.returncode != 0:
        pytest.skip(f"ray start --head failed here: {head.stderr.strip().splitlines()[-1:]}")
    try:
        second = _ray("start", "--address", f"127.0.0.1:{PORT}", "--temp-dir", str(root / "second"), *common, env=env)
        assert second.returncode == 0, second.stderr
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{PORT}"}
    finally:
        _ray("stop", "--force", env=env)


def _alive_nodes(env: dict) -> int:
    code = "import ray; ray.init(); print(sum(n['Alive'] for n in ray.nodes()))"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              timeout=120).stdout.strip().splitlines()[-1])


def test_tagging_and_mixing_on_two_ray_nodes_equal_the_local_executor(cluster: dict, tmp_path: Path,
                                                                         shared_data: Path, monkeypatch):
    assert _alive_nodes(cluster) == 2
    inputs = sorted((shared_data / "dolma-test-data" / "multiple_files").glob("*.jsonl"))
    local = alignmix("tag", *map(str, inputs), "--output", str(tmp_path / "local"), "--tasks", "2")
    assert local.returncode == 0, local.stderr
    for name, value in cluster.items():
        monkeypatch.setenv(name, value)
    on_ray = alignmix("tag", *map(str, inputs), "--output", str(tmp_path / "ray"), "--tasks", "2", "--executor", "ray")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert docs_in(tmp_path / "ray") == docs_in(tmp_path / "local")
    assert json.loads((tmp_path / "ray" / "stats.json").read_text()) == \
        json.loads((tmp_path / "local" / "stats.json").read_text())

    mix = (
        "import json, sys; from pathlib import Path\n"
        "from alignmix.corpus.mix import build_stage_mixture\n"
        "from alignmix.corpus.tokenizer import train_bpe\n"
        "from alignmix.jsonl import read_jsonl_gz\n"
        "from alignmix.recipe import TrainingStage\n"
        "root, executor = Path(sys.argv[1]), sys.argv[2]\n"
        "shards = sorted((root / 'local').glob('*.jsonl.gz'))\n"
        "if not (root / 'tok').exists(): train_bpe((r['text'] for r in read_jsonl_gz(shards)), 300, root / 'tok')\n"
        "stage = TrainingStage(name='s', tokens=6000, seq_len=64, mixture=[{'source': 'web', 'share': 'rest',"
        " 'max_repetitions': 10}])\n"
        "m = build_stage_mixture(stage, {'web': shards}, root / 'tok', root / f'mix-{executor}', seed=3, tasks=2,"
        " executor=None if executor == 'here' else executor)\n"
        "print(json.dumps(m['chunks']))\n"
    )
    chunks = {}
    for executor in ("here", "ray"):
        run = subprocess.run([sys.executable, "-c", mix, str(tmp_path), executor], capture_output=True, text=True,
                             env={**os.environ}, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        chunks[executor] = json.loads(run.stdout.strip().splitlines()[-1])
    assert chunks["ray"] == chunks["here"] and chunks["ray"]
    assert len(list((tmp_path / "mix-ray.tokens" / "web" / "logs" / "completions").iterdir())) == 2
