"""A datatrove JSONL reader that never drops a line silently: each unusable line is a counted skip or an error.

With `on_error="skip"` a bad line is counted as `skipped/<reason>` in the step's stats and logged with
file:line; with `on_error="fail"` it raises `InputError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Literal

import orjson
from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.readers.warc import process_record
from loguru import logger

SKIP_REASONS = (
    "bad_encoding", "malformed_json", "not_an_object", "missing_text", "empty_text", "too_large",
    "not_html", "extraction_failed",
)
OnError = Literal["fail", "skip"]
DEFAULT_MAX_DOCUMENT_BYTES = 10_000_000


class InputError(ValueError):
    """An input line that cannot be used, under `on_error="fail"`."""


class CountingJsonlReader(JsonlReader):
    """JsonlReader that counts (or, on `fail`, raises on) bad encodings, malformed JSON, missing or empty text
    and documents over `max_document_bytes`."""

    name = "JSONL reader (counting skips)"

    def __init__(
        self, *args, on_error: OnError = "fail", max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.on_error = on_error
        self.max_document_bytes = max_document_bytes

    def _skip(self, reason: str, filepath: str, line_number: int, detail: str) -> None:
        message = f"{self.data_folder.resolve_paths(filepath)}:{line_number}: {reason.replace('_', ' ')}: {detail}"
        if self.on_error == "fail":
            raise InputError(message + " (on-error skip counts and skips such lines)")
        self.stat_update(f"skipped/{reason}")
        logger.warning(f"skipped {message}")

    def _parse(self, raw: bytes, filepath: str, line_number: int) -> dict | None:
        if len(raw) > self.max_document_bytes:
            self._skip("too_large", filepath, line_number, f"{len(raw):,} bytes, over {self.max_document_bytes:,}")
            return None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._skip("bad_encoding", filepath, line_number, f"not UTF-8 ({exc.reason} at byte {exc.start})")
            return None
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self._skip("malformed_json", filepath, line_number, f"expected one JSON object per line ({exc})")
            return None
        if not isinstance(row, dict):
            self._skip("not_an_object", filepath, line_number, f"expected a JSON object, got {type(row).__name__}")
            return None
        if self.text_key not in row:
            self._skip("missing_text", filepath, line_number, f"no '{self.text_key}' field; keys: {sorted(row)}")
            return None
        if not isinstance(row[self.text_key], str) or not row[self.text_key].strip():
            self._skip("empty_text", filepath, line_number, f"'{self.text_key}' is empty or not a string")
            return None
        return row

    def read_file(self, filepath: str) -> Iterator[Document]:
        with self.data_folder.open(filepath, "rb", compression=self.compression) as stream:
            # zstd's decompressing reader is not line-iterable; a buffered reader over it is
            handle = stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream)
            for index, raw in enumerate(handle):
                if not raw.strip():
                    continue
                with self.track_time():
                    row = self._parse(raw, filepath, index + 1)
                    if row is None:
                        continue
                    document = self.get_document_from_dict(row, filepath, index)
                    self.stat_update("read")
                yield document


class CountingWarcReader(WarcReader):
    """WarcReader that counts the response records it cannot turn into a document (non-HTML or undecodable) as
    `skipped/not_html` instead of dropping them silently. Request, metadata and warcinfo records are not documents."""

    name = "WARC reader (counting skips)"

    def read_file(self, filepath: str) -> Iterator[Document]:
        from warcio.archiveiterator import ArchiveIterator

        with self.data_folder.open(filepath, "rb", compression=self.compression) as handle:
            for index, record in enumerate(ArchiveIterator(handle)):
                if record.rec_type not in ("response", "conversion"):
                    continue
                with self.track_time():
                    extracted = process_record(record)
                    document = self.get_document_from_dict(extracted, filepath, index) if extracted else None
                    if document is None:
                        self.stat_update("skipped/not_html")
                        logger.warning(f"skipped {filepath}: record {index}: not HTML, or not decodable")
                        continue
                yield document
