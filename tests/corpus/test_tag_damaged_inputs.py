"""`alignmix tag` on inputs that break readers: parquet without the text column or with nulls, a truncated gzip,
a plain file named .zst, a byte-order mark with CRLF, a number as text, and an output folder reused for new input.

In skip mode `documents_in = kept + flagged + skipped` and every good document comes out; in fail mode the user
sees one `error:` line naming the file (and the line or row) and no traceback."""

import gzip
import json
from pathlib import Path

import pytest

from tests.corpus.test_tag_cli import alignmix, docs_in

GOOD = [{"id": f"d{i}", "text": f"An AI assistant helped a farmer plan the harvest, story {i}."} for i in range(3)]


def _jsonl(rows: list[dict], newline: str = "\n") -> bytes:
    return "".join(json.dumps(row) + newline for row in rows).encode()


def _tag(inputs: list[Path], out: Path, mode: str):
    return alignmix("tag", *map(str, inputs), "--output", str(out), "--on-error", mode)


def _stats(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_in"] == stats["documents_kept"] + stats["documents_flagged"] + stats["documents_skipped"]
    return stats


def _one_error_line(result, *expected: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: "), result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def _parquet(path: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_bytes(_jsonl(GOOD))
    return path


def test_parquet_without_the_text_column_is_counted_or_refused(tmp_path: Path, good: Path):
    bad = _parquet(tmp_path / "body.parquet", {"id": ["a", "b"], "body": ["x y", "z w"]})
    _one_error_line(_tag([bad], tmp_path / "fail", "fail"), "body.parquet: missing text: no 'text' column",
                    "columns: ['id', 'body']")
    other = _parquet(tmp_path / "good.parquet", {"id": ["p"], "text": ["A robot answered the question."]})
    result = _tag([bad, other], tmp_path / "skip", "skip")
    assert result.returncode == 0, result.stderr
    stats = _stats(tmp_path / "skip")
    assert stats["documents_in"] == 3 and stats["skipped_by_reason"] == {"missing_text": 2}
    assert [d["id"] for d in docs_in(tmp_path / "skip")] == ["p"]


def test_null_and_non_text_values_are_counted_with_their_reason(tmp_path: Path):
    rows = _parquet(tmp_path / "nulls.parquet", {"id": ["a", "b", "c"], "text": ["An AI wrote.", None, "Hi there."]})
    _one_error_line(_tag([rows], tmp_path / "fail", "fail"), "nulls.parquet: row 2: empty text: 'text' is null")
    assert _tag([rows], tmp_path / "skip", "skip").returncode == 0
    assert _stats(tmp_path / "skip")["skipped_by_reason"] == {"empty_text": 1}
    number = tmp_path / "number.jsonl"
    number.write_bytes(_jsonl([*GOOD, {"id": "n", "text": 42}]))
    _one_error_line(_tag([number], tmp_path / "n-fail", "fail"), "number.jsonl:4: text not a string")
    assert _tag([number], tmp_path / "n-skip", "skip").returncode == 0
    assert _stats(tmp_path / "n-skip")["skipped_by_reason"] == {"text_not_a_string": 1}


@pytest.mark.parametrize("damage", ["truncated gzip", "plain text named .zst"])
def test_a_damaged_compressed_file_is_one_counted_skip_or_one_error_line(tmp_path: Path, good: Path, damage: str):
    many = [{"id": f"z{i}", "text": f"Text number {i} about the weather and {i * 7} cows."} for i in range(2000)]
    if damage == "truncated gzip":
        packed = gzip.compress(_jsonl(many))
        bad = tmp_path / "cut.jsonl.gz"
        bad.write_bytes(packed[: len(packed) // 2])
    else:
        bad = tmp_path / "fake.jsonl.zst"
        bad.write_bytes(_jsonl(many))
    _one_error_line(_tag([bad], tmp_path / "fail", "fail"), f"{bad.name}: unreadable file")
    result = _tag([good, bad], tmp_path / "skip", "skip")
    assert result.returncode == 0, result.stderr
    stats = _stats(tmp_path / "skip")
    assert stats["skipped_by_reason"] == {"unreadable_file": 1}
    kept = {d["id"] for d in docs_in(tmp_path / "skip")}
    assert {d["id"] for d in GOOD} <= kept  # every good document, and what the damaged file held before the damage
    assert stats["documents_in"] == len(kept) + 1


def test_a_byte_order_mark_and_crlf_lose_nothing(tmp_path: Path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl(GOOD, newline="\r\n"))
    result = _tag([path], tmp_path / "out", "fail")
    assert result.returncode == 0, result.stderr
    assert _stats(tmp_path / "out")["documents_in"] == 3
    assert [d["text"] for d in docs_in(tmp_path / "out")] == [d["text"] for d in GOOD]


def test_a_reused_output_folder_tags_the_new_input(tmp_path: Path, good: Path):
    other = tmp_path / "other.jsonl"
    other.write_bytes(_jsonl([{"id": "o", "text": "Skynet decided that humans were a threat."}]))
    out = tmp_path / "out"
    assert _tag([good], out, "fail").returncode == 0
    again = _tag([other], out, "fail")
    assert again.returncode == 0 and "cleared" in again.stdout, again.stdout
    assert _stats(out)["documents_in"] == 1 and [d["id"] for d in docs_in(out)] == ["o"]
    same = _tag([other], out, "fail")  # the same input again: datatrove's completions are trusted, nothing cleared
    assert "cleared" not in same.stdout and _stats(out)["documents_in"] == 1
