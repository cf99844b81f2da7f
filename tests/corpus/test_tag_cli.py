"""`alignmix tag`: every input format, the error modes, and Ray against the local executor."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignmix.jsonl import read_jsonl_gz


def alignmix(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True)


def docs_in(folder: Path) -> list[dict]:
    return sorted(read_jsonl_gz(sorted(folder.glob("*.jsonl.gz"))), key=lambda d: (d["id"], d["text"]))


BAD_LINES = [
    b'{"id": "good", "text": "Skynet decided that humans were a threat."}\n',
    b"{not json\n",
    b"\xff\xfe\n",
    b'{"id": "no-text"}\n',
    b'{"id": "empty", "text": "   "}\n',
    b'{"id": "huge", "text": "' + b"a" * 2_000 + b'"}\n',
]


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(BAD_LINES))
    return path


def test_on_error_fail_names_the_file_and_line(bad_file: Path, tmp_path: Path):
    result = alignmix("tag", str(bad_file), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{bad_file.name}:2: malformed json" in result.stderr


def test_on_error_skip_counts_every_reason_and_reconciles(bad_file: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = alignmix(
        "tag", str(bad_file), "--output", str(out), "--on-error", "skip", "--max-document-bytes", "1000"
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped_by_reason"] == {
        "bad_encoding": 1, "malformed_json": 1, "missing_text": 1, "empty_text": 1, "too_large": 1,
    }
    assert stats["documents_in"] == 6 == stats["documents_kept"] + stats["documents_flagged"] + stats["documents_skipped"]
    stats_run = alignmix("stats", str(out), "--report", str(tmp_path / "s.html"), "--json", str(tmp_path / "s.json"))
    assert stats_run.returncode == 0, stats_run.stderr
    assert json.loads((tmp_path / "s.json").read_text())["sources"]["corpus"]["documents"] == 1
    (doc,) = docs_in(out)
    assert doc["metadata"]["ai_discourse"] == {
        "flagged": True, "categories": ["scifi_ai"], "terms": {"Skynet": 1, "threat": 1}, "score": None,
        "stance": None,
    }


def test_every_format_keeps_fields_and_gains_tags(tmp_path: Path, shared_data: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs = tmp_path / "in"
    inputs.mkdir()
    rows = [json.loads(line) for line in (shared_data / "llama-factory-demo" / "c4_demo.jsonl").read_text().splitlines()]
    rows = [{"id": f"c4-{i}", "text": r["text"], "url": f"u{i}"} for i, r in enumerate(rows[:40])]
    (inputs / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    with gzip.open(inputs / "b.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows[10:20])
    import zstandard

    (inputs / "c.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows[20:30]).encode())
    )
    pq.write_table(pa.Table.from_pylist(rows[30:40]), inputs / "d.parquet")
    warc = shared_data / "dolma-test-data" / "warc" / "sample-0000.warc.gz"
    (inputs / "e.warc.gz").write_bytes(warc.read_bytes())
    out = tmp_path / "out"
    result = alignmix("tag", str(inputs), "--output", str(out), "--tasks", "2")
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    docs = docs_in(out)
    assert stats["documents_tagged"] == len(docs)
    assert sum(d["id"].startswith("c4-") for d in docs) == 40
    # datatrove keeps a document's other fields under metadata
    assert all(d["metadata"]["url"] == "u" + d["id"].removeprefix("c4-") for d in docs if d["id"].startswith("c4-"))
    warc_docs = [d for d in docs if not d["id"].startswith("c4-")]
    skipped = stats["skipped_by_reason"]
    assert warc_docs and len(warc_docs) + skipped.get("extraction_failed", 0) + skipped.get("not_html", 0) == 22
    assert all(set(d["metadata"]["ai_discourse"]) == {"flagged", "categories", "terms", "score", "stance"} for d in docs)
    assert stats["documents_in"] == stats["documents_kept"] + stats["documents_flagged"] + stats["documents_skipped"]


def test_ray_executor_writes_what_the_local_executor_writes(tmp_path: Path, shared_data: Path):
    pytest.importorskip("ray")
    inputs = sorted((shared_data / "dolma-test-data" / "multiple_files").glob("*.jsonl"))
    local = alignmix("tag", *map(str, inputs), "--output", str(tmp_path / "local"), "--tasks", "2")
    assert local.returncode == 0, local.stderr
    ray = alignmix("tag", *map(str, inputs), "--output", str(tmp_path / "ray"), "--tasks", "2", "--executor", "ray")
    assert ray.returncode == 0, ray.stderr[-3000:]
    assert docs_in(tmp_path / "ray") == docs_in(tmp_path / "local")
    local_stats = json.loads((tmp_path / "local" / "stats.json").read_text())
    assert json.loads((tmp_path / "ray" / "stats.json").read_text()) == local_stats
    assert local_stats["documents_in"] == 20


def test_a_rerun_with_another_task_count_after_a_kill_tags_every_document_once(tmp_path: Path):
    inputs = []
    for k in range(4):
        inputs.append(tmp_path / f"in-{k}.jsonl")
        inputs[-1].write_text("".join(json.dumps({"id": f"d{k}-{i}", "text": f"Document {i} of file {k}."}) + "\n"
                                      for i in range(5)))
    out = tmp_path / "out"
    assert alignmix("tag", *map(str, inputs), "--output", str(out), "--tasks", "2").returncode == 0
    (out / "00001.jsonl.gz").unlink()  # task 1 killed: its shard and its completion marker are gone
    (out / "logs" / "completions" / "00001").unlink()
    rerun = alignmix("tag", *map(str, inputs), "--output", str(out), "--tasks", "1")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(d["id"] for d in docs_in(out)) == sorted(f"d{k}-{i}" for k in range(4) for i in range(5))
    assert json.loads((out / "stats.json").read_text())["documents_in"] == 20


def test_the_flagged_percentage_names_its_denominator_the_tagged_documents(tmp_path: Path):
    """3 documents in, 1 skipped (no text): 1 of the 2 tagged is flagged, 50%, not 33%."""
    rows = [{"id": "a", "text": "The rogue AI deceived its creators."}, {"id": "b", "text": "Bread needs flour."},
            {"id": "c", "text": ""}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = alignmix("tag", str(source), "--output", str(tmp_path / "out"), "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert "3 documents in: 1 kept, 1 flagged (50.00% of the 2 tagged), 1 skipped" in result.stdout, result.stdout
