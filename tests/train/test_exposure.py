"""exposure.json: what training consumed of a stage's mixture, from litgpt's metrics and the mixture manifest."""

import json
from pathlib import Path

from alignmix.train.exposure import write_exposure

MANIFEST = {
    "stage": "pretrain", "tokens": 300_000, "block_size": 129,
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
    record = write_exposure(stage, mix, micro_batch_size=8)
    assert record == json.loads((stage / "exposure.json").read_text())
    assert (record["samples_written"], record["samples_seen"], record["warning"]) == (2_325, 2_320, None)
    web, synthetic = record["sources"]
    assert web["written_tokens"] == 285_000 and web["seen_tokens"] == round(285_000 * 2_320 / 2_325)
    assert synthetic["selection"] == {} and synthetic["planned_tokens"] == 15_000


def test_reading_more_samples_than_written_is_a_warning_naming_the_numbers(tmp_path: Path):
    stage, mix = _stage(tmp_path, [2_336])
    record = write_exposure(stage, mix, micro_batch_size=8)
    assert record["passes"] > 1 and record["sources"][1]["max_document_repetitions_seen"] > 4
    assert record["warning"] == ("litgpt consumed 2,336 samples of 129 tokens but the mixture wrote 2,325: 11 samples"
                                 " read again (a second pass over the first ones), more than one micro-batch (8)")


def test_no_metrics_no_exposure(tmp_path: Path):
    stage, mix = _stage(tmp_path)
    assert write_exposure(stage, mix, micro_batch_size=8) is None and not (stage / "exposure.json").exists()


def test_samples_of_several_processes_are_counted_for_all(tmp_path: Path):
    """litgpt's `samples` counts one process's; `total_tokens / tokens` is the number of processes (2 here)."""
    stage, mix = _stage(tmp_path)
    csv = stage / "logs" / "csv" / "version_0" / "metrics.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("iter,samples,tokens,total_tokens\n1,8,1024,2048\n145,1160,148480,296960\n")
    assert write_exposure(stage, mix, micro_batch_size=8)["samples_seen"] == 2_320
