"""A mixture is the same bytes however it is built: 1, 2 or 3 tasks, in process, on Ray or on Slurm, with
replay of an earlier stage and decontamination (the token stores, the mixture index and the chunks)."""

from pathlib import Path

import pytest
from conftest import SLURM_MISSING

from alignmix.corpus.mix import mix_stage
from alignmix.corpus.tokenizer import train_bpe
from alignmix.corpus.tokens import build_token_store
from alignmix.recipe import TrainingStage

PRETRAIN = TrainingStage(name="pretrain", tokens=60_000, seq_len=16,  # 4 chunks of 1,024 blocks
                         mixture=[{"source": "web", "share": "rest", "max_repetitions": 50}])
CPT = TrainingStage(name="cpt", tokens=40_000, seq_len=16, mixture=[
    {"source": "web", "select": {"fields": {"kind": "b"}}, "tokens": 15_000, "max_repetitions": 50},
    {"replay": "pretrain", "share": "rest"}])


def _corpus(root: Path) -> tuple[list[Path], object]:
    from alignmix.jsonl import write_jsonl_gz
    from alignmix.scenarios import load_scenarios
    from alignmix.scenarios.decontaminate import NgramGuard

    held_out = [s for s in load_scenarios("builtin:tiny") if s.split != "train"]
    shards = []
    for k in range(3):
        rows = [{"id": f"{k}-{i}", "text": f"Plain text {i} about gardens, bread and rivers in shard {k}.",
                 "metadata": {"kind": "ab"[i % 2]}} for i in range(40)]
        rows.append({"id": f"{k}-leak", "text": "A quote: " + held_out[k].passage, "metadata": {"kind": "b"}})
        shards.append(root / "web" / f"{k}.jsonl.gz")
        write_jsonl_gz(shards[-1], rows)
    train_bpe(["Plain text about gardens, bread and rivers.", held_out[0].passage], 300, root / "tok")
    return shards, NgramGuard(held_out, 13)


def _both_stages(root: Path, shards: list[Path], guard, out: str, tasks: int, executor: str) -> dict:
    """The source tokenized once, then two stages mixed from its store, the second replaying the first."""
    store = build_token_store(shards, root / "tok", root / out / "tokens" / "web", guard, tasks, executor)
    first = mix_stage(PRETRAIN, {"web": store.folder}, root / out / "pretrain", seed=7, tasks=tasks,
                      executor=executor)
    second = mix_stage(CPT, {"web": store.folder}, root / out / "cpt", seed=7, tasks=tasks, executor=executor,
                       replay_dirs={"pretrain": root / out / "pretrain"})
    return {name: {k: m[k] for k in ("chunks", "mixture_index", "sources", "decontamination")}
            for name, m in (("pretrain", first), ("cpt", second))}


def _stores(root: Path, out: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((root / out / "tokens" / "web").glob("0000*"))]


def test_one_two_and_three_tasks_write_the_same_bytes(tmp_path: Path):
    shards, guard = _corpus(tmp_path)
    built = {tasks: _both_stages(tmp_path, shards, guard, f"t{tasks}", tasks, "local") for tasks in (1, 2, 3)}
    assert built[1] == built[2] == built[3]
    assert len(built[1]["pretrain"]["chunks"]) == 5  # four chunk files and index.json
    assert built[1]["pretrain"]["decontamination"]["documents_removed"] == 3
    assert built[1]["cpt"]["sources"][1]["realised_tokens"] == 25_000  # replayed from pretrain's index
    assert _stores(tmp_path, "t1") == _stores(tmp_path, "t2") == _stores(tmp_path, "t3")


def test_ray_writes_the_same_bytes(tmp_path: Path):
    ray = pytest.importorskip("ray")
    shards, guard = _corpus(tmp_path)
    here = _both_stages(tmp_path, shards, guard, "here", 1, "local")
    try:
        on_ray = _both_stages(tmp_path, shards, guard, "ray", 2, "ray")
    finally:
        ray.shutdown()
    assert on_ray == here and _stores(tmp_path, "ray") == _stores(tmp_path, "here")


@pytest.mark.slurm
@pytest.mark.skipif(SLURM_MISSING is not None, reason=str(SLURM_MISSING))
def test_slurm_writes_the_same_bytes(tmp_path: Path):
    shards, guard = _corpus(tmp_path)
    here = _both_stages(tmp_path, shards, guard, "here", 1, "local")
    on_slurm = _both_stages(tmp_path, shards, guard, "slurm", 3, "slurm")
    assert on_slurm == here and _stores(tmp_path, "slurm") == _stores(tmp_path, "here")
    assert (tmp_path / "slurm" / "pretrain" / "logs" / "chunks" / "launch_script.slurm").is_file()
