"""jsonl and byte-reproducible jsonl.gz writing and reading, shared by every module that writes rows."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alignmix.errors import AlignmixError


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as UTF-8 JSON lines (replacing the file); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_jsonl_gz(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as gzip-compressed JSON lines with a fixed header time, so equal rows give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped:
        with io.TextIOWrapper(zipped, encoding="utf-8") as text:
            for row in rows:
                text.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    return count


def read_jsonl_gz(paths: Iterable[Path]) -> Iterator[dict]:
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)


class JsonLinesError(AlignmixError):
    """A jsonl file that cannot be read: the message names the file and line."""


def iter_json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a UTF-8 jsonl file (lines end at \\n only)."""
    number = 0
    try:
        with path.open(encoding="utf-8", newline="\n") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise JsonLinesError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise JsonLinesError(f"{path}:{number + 1}: not UTF-8 text ({exc.reason})") from None


def read_json(path: Path, expected: str) -> Any:
    """The value of a UTF-8 JSON file; one that is not JSON raises JsonLinesError naming the file and line, and
    `expected` (what the file should hold)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise JsonLinesError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); expected {expected}") from None
    except UnicodeDecodeError as exc:
        raise JsonLinesError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected {expected}") from None
