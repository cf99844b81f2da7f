"""exposure.json and documents_seen.parquet: what training consumed of a stage's mixture, from litgpt's metrics
and the mixture (exact when streamed, checked against an independent count from the index)."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from alignmix.corpus.mix import build_stage_mixture
from alignmix.corpus.tokenizer import train_bpe
from alignmix.jsonl import read_jsonl_gz
from alignmix.outputs import MixtureIndex, TokenStore
from alignmix.recipe import TrainingStage
from alignmix.train.exposure import write_exposure

MANIFEST = {
    "stage": "pretrain", "tokens": 300_000, "block_size": 129, "delivery": "chunks",
    "sources": [
        {"name": "web[flagged=False]", "selection": {"flagged": False}, "tokens": 285_000, "realised_tokens": 285_000,
         "documents_used": 2_500, "max_document_repetitions": 2},
        {"name": "aligned_synthetic", "selection": {}, "tokens": 15_000, "realised_tokens": 15_000,
         "documents_used": 96, "max_document_repetitions": 4},
    ],
}


def _stage(tmp_path: Path, *versions: list[int]) -> tuple[Path, Path]:
    mix = tmp_path / "mix"
    mix.mkdir()
    (mix / "mixture_manifest.json").write_text(json.dumps(MANIFEST))
    stage = tmp_path / "pretrain"
    for number, samples in enumerate(versions):  # a resumed run logs a new version
        csv = stage / "logs" / "csv" / f"version_{number}" / "metrics.csv"
        csv.parent.mkdir(parents=True)
        csv.write_text("iter,samples,loss\n" + "".join(f"{s // 8},{s},1.0\n" for s in samples) + ",,\n")
    return stage, mix


def test_a_run_that_reads_every_sample_once_has_no_warning(tmp_path: Path):
    stage, mix = _stage(tmp_path, [8, 1_000], [1_008, 2_320])
    record = write_exposure(stage, mix, seq_len=128)
    assert record == json.loads((stage / "exposure.json").read_text())
    assert (record["samples_written"], record["samples_seen"], record["warning"]) == (2_325, 2_320, None)
    assert not record["exact"] and record["method"].startswith("estimate: ")
    assert not (stage / "documents_seen.parquet").exists()  # LitData's order within a partial pass is unknown
    web, synthetic = record["sources"]
    assert web["written_tokens"] == 285_000 and web["seen_tokens"] == round(285_000 * 2_320 / 2_325)
    assert synthetic["selection"] == {} and synthetic["planned_tokens"] == 15_000


def test_reading_more_samples_than_written_is_a_warning_naming_the_numbers(tmp_path: Path):
    stage, mix = _stage(tmp_path, [2_336])
    record = write_exposure(stage, mix, seq_len=128)
    assert record["passes"] > 1 and record["sources"][1]["max_document_repetitions_seen"] > 4
    assert record["warning"] == ("litgpt consumed 2,336 samples of 129 tokens but the mixture wrote 2,325: 11 samples"
                                 " read again (a second pass over the first ones), more than one micro-batch over all ranks (8)")


def test_no_metrics_no_exposure(tmp_path: Path):
    stage, mix = _stage(tmp_path)
    assert write_exposure(stage, mix, seq_len=128) is None and not (stage / "exposure.json").exists()


def _metrics(stage: Path, iters: int, micro_batch: int, world: int, seq_len: int) -> None:
    """litgpt's CSV metrics row after `iters` micro-batches per rank (the columns exposure reads)."""
    csv = stage / "logs" / "csv" / "version_0" / "metrics.csv"
    csv.parent.mkdir(parents=True)
    samples = iters * micro_batch
    csv.write_text(f"iter,samples,tokens,total_tokens\n{iters},{samples},{samples * seq_len},"
                   f"{samples * seq_len * world}\n")


@pytest.fixture(scope="module")
def streamed(tagged: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A streamed pretraining mixture, and a CPT mixture replaying it beside flagged documents."""
    root = tmp_path_factory.mktemp("streamed")
    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, root / "tok")
    pretrain = TrainingStage(name="pretrain", tokens=20_000, seq_len=64, mixture=[
        {"source": "web", "select": {"flagged": False}, "share": "rest", "max_repetitions": 3},
        {"source": "web", "select": {"flagged": True}, "share": 0.1, "max_repetitions": 10}])
    build_stage_mixture(pretrain, {"web": shards}, root / "tok", root / "pretrain", seed=5, delivery="stream")
    cpt = TrainingStage(name="cpt", tokens=6_000, seq_len=32, mixture=[
        {"source": "web", "select": {"flagged": True}, "tokens": 3_000, "max_repetitions": 5},
        {"replay": "pretrain", "share": "rest"}])
    build_stage_mixture(cpt, {"web": shards}, root / "tok", root / "cpt", seed=5, delivery="stream",
                        replay_dirs={"pretrain": root / "pretrain"})
    return root


def independent_count(mixture: Path, tokens_read: int) -> dict[str, tuple[int, int, int]]:
    """Per entry (tokens, documents, most pieces of one document) read in the stream's first `tokens_read`
    tokens, with numpy from the index columns."""
    index = MixtureIndex.of(mixture)
    take = np.asarray(index.column("take"), dtype=np.int64)
    ends = np.cumsum(take)
    read = np.clip(np.minimum(ends, tokens_read) - (ends - take), 0, None)
    entry, shard, document = (np.asarray(index.column(c)) for c in ("entry", "shard", "document"))
    counts = {}
    for number, origin in enumerate(index.entries):
        mine = (entry == number) & (read > 0)
        places = shard[mine].astype(np.int64) << 32 | document[mine]
        _, times = np.unique(places, return_counts=True)
        counts[origin["name"]] = (int(read[entry == number].sum()), len(times), int(times.max(initial=0)))
    return counts


@pytest.mark.parametrize(("iters", "micro_batch", "world"), [(30, 4, 1), (7, 2, 4)])
def test_streamed_exposure_is_exact_mid_pass(streamed: Path, tmp_path: Path, iters: int, micro_batch: int, world: int):
    _metrics(tmp_path, iters, micro_batch, world, 64)
    record = write_exposure(tmp_path, streamed / "pretrain", seq_len=64)
    samples = iters * micro_batch * world
    assert record["exact"] and record["samples_seen"] == samples and record["method"].startswith("exact: ")
    expected = independent_count(streamed / "pretrain", samples * 65)
    assert {s["name"]: (s["seen_tokens"], s["documents_seen"], s["max_document_repetitions_seen"])
            for s in record["sources"]} == expected
    seen = pl.read_parquet(tmp_path / "documents_seen.parquet")
    assert seen.columns == ["id", "source", "shard", "document", "times_seen", "tokens_seen"]
    assert seen["tokens_seen"].sum() == samples * 65 and seen["id"].null_count() == 0
    assert len(seen) == len(seen.unique(["source", "shard", "document"]))
    assert seen["times_seen"].max() == max(v[2] for v in expected.values())


def test_a_replayed_stages_documents_are_followed_into_its_mixture(streamed: Path, tmp_path: Path):
    _metrics(tmp_path, 40, 4, 1, 32)
    record = write_exposure(tmp_path, streamed / "cpt", seq_len=32)
    expected = independent_count(streamed / "cpt", 160 * 33)
    assert {s["name"]: s["seen_tokens"] for s in record["sources"]} == {k: v[0] for k, v in expected.items()}
    seen = pl.read_parquet(tmp_path / "documents_seen.parquet")
    assert seen["tokens_seen"].sum() == 160 * 33 and set(seen["source"]) == {"web"}
    flagged = TokenStore(streamed / "pretrain.tokens" / "web").table().select("id", "metadata.ai_discourse.flagged")
    joined = seen.join(flagged.collect(), on="id")
    assert len(joined) == len(seen) and joined["metadata.ai_discourse.flagged"].any()  # the audit is a query
