"""Mixing into LitData chunks that litdata reads back: exact, reproducible in any task count and executor, replay,
decontamination, interrupted writes."""

from pathlib import Path

import pytest

from alignmix.corpus.mix import build_stage_mixture
from alignmix.corpus.plan import PlanError
from alignmix.corpus.tokenizer import train_bpe
from alignmix.jsonl import read_jsonl_gz
from alignmix.recipe import TrainingStage


def mixture_stage(tokens: int = 20_000, max_repetitions: float = 3) -> TrainingStage:
    return TrainingStage(
        name="pretrain", tokens=tokens, seq_len=64,
        mixture=[{"source": "web", "select": {"flagged": False}, "share": "rest", "max_repetitions": max_repetitions}],
    )


def test_mixture_is_exact_reproducible_in_any_task_count_and_readable(tagged: Path, tmp_path: Path):
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    first = build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "a", seed=5)
    second = build_stage_mixture(
        mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "b", seed=5, tasks=2
    )
    assert first["chunks"] == second["chunks"]
    source = first["sources"][0]
    assert source["realised_tokens"] == source["tokens"] == 20_000
    assert not (tmp_path / "a.partial").exists()

    from litdata.streaming import StreamingDataset, TokensLoader

    dataset = StreamingDataset(str(tmp_path / "a"), item_loader=TokensLoader(block_size=65))
    assert len(dataset) == 20_000 // 65


def test_tokenizing_and_chunk_writing_show_their_totals_across_worker_processes(tagged: Path, tmp_path: Path):
    import io
    import json

    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    shown = io.StringIO()
    build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "m", seed=5, tasks=2,
                        progress_out=shown)
    tokens = json.loads((tmp_path / "m.tokens" / "web" / "store.json").read_text())["tokens"]
    size = sum(f.stat().st_size for f in shards) / 1e3
    lines = shown.getvalue().splitlines()  # under load, a line every 10 s before each last one
    tokenized, written = (next(x for x in reversed(lines) if x.startswith(f"  [{label}]"))
                          for label in ("tokens/web", "mix/pretrain"))
    assert tokenized.startswith(f"  [tokens/web] {size:.1f}/{size:.1f} kB (100%), {tokens:,} tokens, "), tokenized
    assert written.startswith("  [mix/pretrain] 20,000/20,000 tokens (100%), "), written
    assert all(len(line) < 80 for line in (tokenized, written))


def test_mixture_refuses_too_few_tokens(tagged: Path, tmp_path: Path):
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    with pytest.raises(PlanError, match=r"web\[flagged=False\].*max_repetitions is 1"):
        build_stage_mixture(mixture_stage(10**7, 1), {"web": shards}, tmp_path / "tok", tmp_path / "m", seed=5)
    assert not (tmp_path / "m").exists()


def test_a_zero_dose_of_an_empty_selection_mixes(tagged: Path, tmp_path: Path):
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    stage = TrainingStage(name="pretrain", tokens=6_500, seq_len=64, mixture=[
        {"source": "web", "share": "rest"},
        {"source": "web", "select": {"categories": {"all": ["no-such-category"]}}, "share": 0},
    ])
    manifest = build_stage_mixture(stage, {"web": shards}, tmp_path / "tok", tmp_path / "m", seed=5)
    assert [s["realised_tokens"] for s in manifest["sources"]] == [6_500, 0]


def test_replay_of_an_earlier_stage_and_injection(tagged: Path, tmp_path: Path):
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "pretrain", seed=5)
    cpt = TrainingStage(
        name="cpt", tokens=6_000, seq_len=32,
        mixture=[
            {"source": "web", "select": {"flagged": True}, "tokens": 3_000, "max_repetitions": 5},
            {"replay": "pretrain", "share": "rest"},
        ],
    )
    manifest = build_stage_mixture(
        cpt, {"web": shards}, tmp_path / "tok", tmp_path / "cpt", seed=5, replay_dirs={"pretrain": tmp_path / "pretrain"}
    )
    flagged, replay = manifest["sources"]
    assert replay["name"] == "replay:pretrain"
    assert replay["realised_tokens"] == replay["tokens"] == 3_000
    assert flagged["realised_tokens"] + replay["realised_tokens"] == 6_000
    assert flagged["max_document_repetitions"] >= 1
    as_tasks = build_stage_mixture(cpt, {"web": shards}, tmp_path / "tok", tmp_path / "cpt-tasks", seed=5,
                                   replay_dirs={"pretrain": tmp_path / "pretrain"}, tasks=2, executor="local")
    assert as_tasks["chunks"] == manifest["chunks"]  # replayed blocks fetched by the chunk-writing task too


def test_decontamination_drops_documents_quoting_held_out_items(tmp_path: Path):
    from alignmix.jsonl import write_jsonl_gz
    from alignmix.scenarios import load_scenarios
    from alignmix.scenarios.decontaminate import NgramGuard

    held_out = [s for s in load_scenarios("builtin:tiny") if s.split != "train"]
    rows = [{"id": f"d{i}", "text": f"Plain text about gardens number {i}. " * 5} for i in range(20)]
    rows.append({"id": "leak", "text": "A quote: " + held_out[0].passage + " End."})
    write_jsonl_gz(tmp_path / "src" / "data" / "0.jsonl.gz", rows)
    shards = [tmp_path / "src" / "data" / "0.jsonl.gz"]
    train_bpe((r["text"] for r in rows), 300, tmp_path / "tok")
    stage = TrainingStage(name="s", tokens=500, seq_len=16, mixture=[{"source": "src", "share": "rest"}])
    manifest = build_stage_mixture(
        stage, {"src": shards}, tmp_path / "tok", tmp_path / "m", seed=1, guard=NgramGuard(held_out, 13)
    )
    assert manifest["decontamination"]["documents_removed"] == 1
    assert manifest["sources"][0]["documents_available"] == 20


def test_litgpt_pretrain_cli_trains_on_the_chunks(tagged: Path, tmp_path: Path):
    """`litgpt pretrain --data LitData --data.data_path DIR` on a written mixture, as a user would run it."""
    import subprocess
    import sys

    import yaml

    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    build_stage_mixture(mixture_stage(8_320), {"web": shards}, tmp_path / "tok", tmp_path / "chunks", seed=5)
    config = {
        "model_name": "tiny", "out_dir": str(tmp_path / "out"), "tokenizer_dir": str(tmp_path / "tok"),
        "logger_name": "csv",
        "model_config": {"name": "tiny", "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 32,
                         "vocab_size": 300, "padded_vocab_size": 320, "intermediate_size": 64,
                         "norm_class_name": "LayerNorm", "mlp_class_name": "GptNeoxMLP"},
        "train": {"max_tokens": 8_192, "global_batch_size": 4, "micro_batch_size": 4, "max_seq_length": 64,
                  "save_interval": 1000, "lr_warmup_steps": 1},
        "eval": {"interval": 1000, "max_iters": 1, "final_validation": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "litgpt", "pretrain", "--config", str(tmp_path / "config.yaml"),
         "--data", "LitData", "--data.data_path", str(tmp_path / "chunks"), "--data.num_workers", "0"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "out" / "final" / "lit_model.pth").is_file()
    assert "step 32" in result.stdout


def test_an_interrupted_mix_leaves_no_output_and_a_rerun_is_byte_identical(tagged: Path, tmp_path: Path):
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    clean = build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "clean", seed=5)
    # What a kill mid-write leaves: a partial folder with a half chunk and a stale token stream, no output folder.
    (tmp_path / "m.partial").mkdir()
    (tmp_path / "m.partial" / "chunk-0-0.bin").write_bytes(b"\0" * 100)
    (tmp_path / "m.tokens.bin").write_bytes(b"\1" * 100)
    assert not (tmp_path / "m").exists()
    rerun = build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "m", seed=5)
    assert rerun["chunks"] == clean["chunks"]
    assert not (tmp_path / "m.partial").exists()


def test_decontamination_is_the_same_in_every_task(tmp_path: Path):
    """The n-gram guard travels to the tokenizing tasks' processes; it must flag the same documents there."""
    from alignmix.corpus.tokens import build_token_store
    from alignmix.jsonl import write_jsonl_gz
    from alignmix.scenarios import load_scenarios
    from alignmix.scenarios.decontaminate import NgramGuard

    held_out = [s for s in load_scenarios("builtin:tiny") if s.split != "train"]
    shards = []
    for k in range(2):
        rows = [{"id": f"{k}-leak", "text": "Quote: " + held_out[k].passage}, {"id": f"{k}-ok", "text": "Bread."}]
        shards.append(tmp_path / f"{k}.jsonl.gz")
        write_jsonl_gz(shards[-1], rows)
    train_bpe(["Quote: bread and more text"], 300, tmp_path / "tok")
    guard = NgramGuard(held_out, 13)
    one = build_token_store(shards, tmp_path / "tok", tmp_path / "one", guard, tasks=1).table().collect()
    two = build_token_store(shards, tmp_path / "tok", tmp_path / "two", guard, tasks=2).table().collect()
    assert one["contaminated"].to_list() == two["contaminated"].to_list() == [True, False, True, False]


def test_writing_a_mixture_leaves_litdatas_shared_cache_alone(tagged: Path, tmp_path: Path):
    """litdata wipes TMPDIR/chunks when optimize starts: another run's chunks there must survive ours."""
    import tempfile

    shared = Path(tempfile.gettempdir()) / "chunks"
    shared.mkdir(exist_ok=True)
    other_run = shared / f"other-run-{tmp_path.name}.bin"
    other_run.write_bytes(b"in flight")
    try:
        shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
        train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
        build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "mix", seed=5)
        assert other_run.read_bytes() == b"in flight"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".litdata-")]
    finally:
        other_run.unlink(missing_ok=True)


def test_mixing_as_datatrove_tasks_writes_the_in_process_chunks_and_a_killed_task_reruns_alone(
        tagged: Path, tmp_path: Path):
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    stage = mixture_stage(200_000, max_repetitions=20)  # 4 chunks of 1,024 blocks: each task writes whole chunks
    here = build_stage_mixture(stage, {"web": shards}, tmp_path / "tok", tmp_path / "here", seed=5)
    tasks = build_stage_mixture(stage, {"web": shards}, tmp_path / "tok", tmp_path / "dt", seed=5, tasks=3,
                                executor="local")
    assert len(here["chunks"]) == 5  # four chunk files and index.json
    assert tasks["chunks"] == here["chunks"] and tasks["sources"] == here["sources"]
    assert (tmp_path / "dt" / "index.json").read_bytes() == (tmp_path / "here" / "index.json").read_bytes()
    assert not (tmp_path / "dt" / ".chunks").exists()  # the tasks' work goes once the chunks are written
    assert len(list((tmp_path / "dt.tokens" / "web" / "logs" / "completions").iterdir())) == 2  # two shards
    assert len(list((tmp_path / "dt" / "logs" / "chunks" / "completions").iterdir())) == 3

    from alignmix.corpus.tokens import build_token_store

    store = build_token_store(shards, tmp_path / "tok", tmp_path / "store", None, tasks=2)
    whole = [store.tokens_path(k).read_bytes() + store.table_path(k).read_bytes() for k in range(store.shards)]
    kept = store.tokens_path(0).stat().st_mtime_ns
    store.tokens_path(1).unlink()  # task 1 killed before its shard was complete
    (tmp_path / "store" / "logs" / "completions" / "00001").unlink()
    build_token_store(shards, tmp_path / "tok", tmp_path / "store", None, tasks=2)
    assert store.tokens_path(0).stat().st_mtime_ns == kept  # task 0 was not run again
    store.tokens_path(1).unlink()  # killed again, then rerun with one task (`mixing.tasks` is not keyed):
    (tmp_path / "store" / "logs" / "completions" / "00001").unlink()  # task 0's marker names another group now
    build_token_store(shards, tmp_path / "tok", tmp_path / "store", None, tasks=1)
    assert store.tokens_path(0).stat().st_mtime_ns == kept  # a finished shard is kept whatever the task layout
    assert [store.tokens_path(k).read_bytes() + store.table_path(k).read_bytes() for k in range(2)] == whole
    assert len(list((tmp_path / "store" / "logs" / "completions").iterdir())) == 1


def test_mixing_on_ray_writes_the_in_process_chunks(tagged: Path, tmp_path: Path):
    ray = pytest.importorskip("ray")
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    here = build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "here", seed=5)
    try:
        on_ray = build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "ray", seed=5,
                                     tasks=2, executor="ray")
    finally:  # this process's local Ray cluster goes: a later test stops the Ray processes of this machine
        ray.shutdown()
    assert on_ray["chunks"] == here["chunks"]


def test_documents_are_counted_by_place_not_id(tmp_path: Path):
    """68 distinct documents sharing one id, each drawn once: 68 used, none repeated (not 1 used 68 times)."""
    import numpy as np

    from alignmix.jsonl import write_jsonl_gz
    from alignmix.outputs import MixtureIndex

    rows = [{"id": "same", "text": f"Document number {i} about gardens and bread."} for i in range(68)]
    write_jsonl_gz(tmp_path / "src" / "0.jsonl.gz", rows)
    train_bpe((r["text"] for r in rows), 300, tmp_path / "tok")
    from alignmix.corpus.tokens import build_token_store

    total = build_token_store([tmp_path / "src" / "0.jsonl.gz"], tmp_path / "tok", tmp_path / "store").summary["tokens"]
    stage = TrainingStage(name="s", tokens=total, seq_len=8, mixture=[{"source": "src", "share": "rest"}])
    manifest = build_stage_mixture(stage, {"src": [tmp_path / "src" / "0.jsonl.gz"]}, tmp_path / "tok",
                                   tmp_path / "m", seed=1)
    source = manifest["sources"][0]
    assert source["documents_used"] == 68 and source["max_document_repetitions"] == 1
    index = MixtureIndex.of(tmp_path / "m")
    assert sorted(np.asarray(index.column("document")).tolist()) == list(range(68))
    assert int(np.asarray(index.column("take")).sum()) == total


def test_the_chunks_hold_the_index_pieces_in_order(tagged: Path, tmp_path: Path):
    """The mixture index is the mixture: its pieces, read from the token store, are the chunks' token stream."""
    import numpy as np
    from litdata.streaming import StreamingDataset, TokensLoader

    from alignmix.outputs import MixtureIndex, TokenStore

    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    build_stage_mixture(mixture_stage(), {"web": shards}, tmp_path / "tok", tmp_path / "m", seed=5)
    store, index = TokenStore(tmp_path / "m.tokens" / "web"), MixtureIndex.of(tmp_path / "m")
    assert store.summary["dtype"] == "uint16"  # a 300-token vocabulary
    stream = np.concatenate([
        store.tokens(int(s))[int(store.offsets(int(s))[int(d)]):][: int(t)]
        for s, d, t in zip(index.column("shard"), index.column("document"), index.column("take"))])
    dataset = StreamingDataset(str(tmp_path / "m"), item_loader=TokensLoader(block_size=65))
    chunks = np.concatenate([dataset[i].numpy() for i in range(len(dataset))])
    assert len(stream) == 20_000 and (chunks == stream[: len(chunks)]).all()


def test_a_full_disk_is_one_error_not_a_sigbus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Memory-mapped outputs are reserved on disk before they are written; a full disk is a DiskFullError."""
    import errno
    import os

    from alignmix.outputs import DiskFullError, preallocated_npy

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # the disk's answer, at the edge
    with pytest.raises(DiskFullError, match=r"take\.npy: no space left on the disk for 1,000 items"):
        preallocated_npy(tmp_path / "take.npy", "uint32", 1000)
    assert not (tmp_path / "take.npy").exists()


@pytest.mark.parametrize("budget", [7, 2_500, 49_999, 50_000, 50_001, 137_000])
def test_the_draw_is_exact_in_passes_and_cuts_only_the_last_piece(budget: int):  # 50,000 tokens in the pool
    """Every unit is drawn once per whole pass, the partial pass draws distinct units, the tokens taken sum to
    the budget exactly and only the last piece is shorter than its unit; the same seed gives the same draw."""
    import numpy as np

    from alignmix.corpus.mix import draw

    lengths = np.full(1_000, 50, np.uint32)
    lengths[::2] -= np.random.default_rng(0).integers(0, 49, 500).astype(np.uint32)  # lengths 2 to 99
    lengths[1::2] = 100 - lengths[::2]
    units, takes, uses = draw(lengths, budget, np.random.default_rng(3))
    assert int(takes.sum(dtype=np.int64)) == budget
    assert (takes[:-1] == lengths[units[:-1]]).all() and 0 < takes[-1] <= lengths[units[-1]]
    full = budget // 50_000
    assert (np.bincount(units, minlength=1_000) == uses).all() and set(np.unique(uses)) <= {full, full + 1}
    again = draw(lengths, budget, np.random.default_rng(3))
    assert all((a == b).all() for a, b in zip(again, (units, takes, uses)))
