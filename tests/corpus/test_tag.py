"""Tagging through a real datatrove pipeline: every document counted, AI discourse flagged, compressed and parquet inputs."""

import json
from pathlib import Path

from alignmix.corpus.tag import tag_files, write_stats
from alignmix.jsonl import read_jsonl_gz


def test_every_document_is_counted(tagged: Path):
    stats = json.loads((tagged / "tag" / "stats.json").read_text())
    assert stats["documents_in"] == 605
    assert stats["documents_tagged"] == 601
    assert stats["skipped_by_reason"] == {"bad_encoding": 1, "malformed_json": 1, "not_an_object": 1, "missing_text": 1}
    assert stats["documents_in"] == stats["documents_kept"] + stats["documents_flagged"] + stats["documents_skipped"]
    rows = list(read_jsonl_gz(sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))))
    assert len(rows) == 601
    flagged = [r for r in rows if r["metadata"]["ai_discourse"]["flagged"]]
    assert len(flagged) == stats["documents_flagged"]
    assert set(rows[0]["metadata"]["ai_discourse"]) == {"flagged", "categories", "terms", "score", "stance"}


def test_generated_ai_stories_are_flagged_and_plain_web_text_is_not(tagged: Path):
    rows = list(read_jsonl_gz(sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))))
    by_kind: dict[str, list[bool]] = {}
    for row in rows:
        kind = row["metadata"].get("generated_kind")
        if kind:
            by_kind.setdefault(kind, []).append(row["metadata"]["ai_discourse"]["flagged"])
    assert all(by_kind["ai_misaligned"])
    assert sum(by_kind["web"]) == 0


def test_tagging_a_real_common_crawl_sample(tmp_path: Path, shared_data: Path):
    files = sorted((shared_data / "dolma-test-data" / "multiple_files").glob("*.jsonl"))
    stats = write_stats(tmp_path / "tag", [tag_files(files, tmp_path / "tag", source_name="cc", tasks=1)])
    assert stats["documents_in"] == 20 and stats["documents_skipped"] == 0


def test_zstd_and_parquet_inputs(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = [{"id": "1", "body": "The robot deceived everyone."}, {"id": "2", "body": "Bake the bread for an hour."}]
    (tmp_path / "docs.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "docs.parquet")
    from_zstd = tag_files([tmp_path / "docs.jsonl.zst"], tmp_path / "z", source_name="z", text_key="body")
    from_parquet = tag_files(
        [tmp_path / "docs.parquet"], tmp_path / "p", source_name="p", text_key="body", file_format="parquet"
    )
    for counts in (from_zstd, from_parquet):
        stats = write_stats(tmp_path, [counts])
        assert stats["documents_tagged"] == 2 and stats["documents_flagged"] == 1


def test_tagging_shows_the_input_read_and_the_documents_tagged_across_worker_processes(tmp_path: Path):
    import io

    from alignmix.corpus.engines import summed_counts
    from alignmix.corpus.generate import write_generated_corpus

    files = write_generated_corpus(tmp_path / "gen", "web", 400, 0.05, 0.05, seed=5, shards=2)
    shown = io.StringIO()
    counts = tag_files(files, tmp_path / "tag", source_name="web", tasks=2, progress_out=shown)
    size = sum(f.stat().st_size for f in files)
    assert summed_counts(tmp_path / "tag" / "logs") == {"bytes": size, "documents": 400}  # both tasks' reports
    last = shown.getvalue().splitlines()[-1]
    assert last.startswith(f"  [tag/web] {size / 1e3:.1f}/{size / 1e3:.1f} kB (100%), 400 documents, "), last
    assert len(last) < 80 and counts["flagged"] + counts["not_flagged"] == 400
