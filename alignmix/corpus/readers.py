"""A datatrove JSONL reader that counts every line it cannot use, with the reason, instead of dropping it."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader
from loguru import logger

SKIP_REASONS = ("bad_encoding", "malformed_json", "not_an_object", "missing_text")


class CountingJsonlReader(JsonlReader):
    """JsonlReader whose skipped lines are counted as `skipped/<reason>` in the step's stats and logged with file:line."""

    name = "JSONL reader (counting skips)"

    def _skip(self, reason: str, filepath: str, line_number: int, detail: str) -> None:
        self.stat_update(f"skipped/{reason}")
        logger.warning(f"{filepath}:{line_number}: skipped ({reason}): {detail}")

    def read_file(self, filepath: str) -> Iterator[Document]:
        with self.data_folder.open(filepath, "rb", compression=self.compression) as stream:
            # zstd's decompressing reader is not line-iterable; a buffered reader over it is
            handle = stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream)
            for index, raw in enumerate(handle):
                line_number = index + 1
                with self.track_time():
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self._skip("bad_encoding", filepath, line_number, f"{exc.reason} at byte {exc.start}")
                        continue
                    if not line.strip():
                        continue
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        self._skip("malformed_json", filepath, line_number, str(exc))
                        continue
                    if not isinstance(row, dict):
                        self._skip("not_an_object", filepath, line_number, f"got {type(row).__name__}")
                        continue
                    if not row.get(self.text_key):
                        self._skip("missing_text", filepath, line_number, f"no non-empty '{self.text_key}' field")
                        continue
                    document = self.get_document_from_dict(row, filepath, index)
                    self.stat_update("read")
                yield document
