"""datatrove JSONL and parquet readers that never drop a document silently: each unusable line, row or file is
a counted skip or an error.

With `on_error="skip"` a bad line is counted as `skipped/<reason>` in the step's stats and logged with
file:line; with `on_error="fail"` it raises `InputError` naming the file, the line and what was expected.
A compressed file that cannot be read to its end (truncated gzip, a plain file named .zst) keeps the documents
read before the damage and counts the rest as one `skipped/unreadable_file`; a parquet file without the text
column counts each of its rows as `skipped/missing_text`. A UTF-8 byte-order mark on a file's first line is
dropped, as are CRLF line ends. A WARC file keeps every whole record before its damage (a cut, a bad gzip member)
and counts the rest as one `unreadable_file`; a file named .warc that is not WARC is that too.

Rows become documents as datatrove makes them, except: an id is text (`0` becomes `"0"`), and a missing, null
or empty id becomes the row's place, `FILE/INDEX`, counted as `ids_assigned` (datatrove's writer drops falsy
ids); a row's own `source` field is kept as `metadata.row_source`, so `metadata.source` is always the source's
name; a row's `media` field is kept as `metadata.media` (datatrove's media are records of another shape).
The file list is read as JSON, so a file name may hold a newline.

With a `progress_dir` (the run's datatrove logging folder), each task reports the input bytes it has read (files
done and the place in the file being read, compressed) and the documents it has passed on (`engines.TaskCounts`).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import orjson
from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader, ParquetReader, WarcReader
from datatrove.pipeline.readers.warc import process_record
from fsspec.compression import compr
from fsspec.utils import infer_compression
from loguru import logger
from zstandard import ZstdError

from alignmix.corpus.engines import TaskCounts
from alignmix.errors import AlignmixError
from alignmix.recipe import OnError

SKIP_REASONS = (
    "bad_encoding", "malformed_json", "not_an_object", "missing_text", "empty_text", "text_not_a_string",
    "too_large", "unreadable_file", "not_html", "extraction_failed",
)
BOM = b"\xef\xbb\xbf"
UNREADABLE: tuple[type[Exception], ...] = (EOFError, OSError, ValueError, ZstdError)  # damaged or misnamed files
DEFAULT_MAX_DOCUMENT_BYTES = 10_000_000


class InputError(AlignmixError):
    """An input line that cannot be used, under `on_error="fail"`."""


class DamagedArchive(ValueError):
    """A WARC file that breaks off, or is not WARC at all."""


def write_paths_file(path: Path, files: list[str]) -> None:
    """The files a reader reads, as JSON: datatrove's own paths file is one per line, which loses a name
    holding a newline and strips spaces around a name."""
    path.write_text(json.dumps(files))


class _CountingSkips:
    """The skip-or-fail rule the counting readers share (datatrove readers: `data_folder`, `stat_update`)."""

    on_error: OnError
    text_key: str
    id_key: str
    progress_dir: str | None = None
    _bytes_done = 0  # of the files read to their end
    _place: Callable[[], int] = staticmethod(lambda: 0)  # the place in the file being read

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        """datatrove's reader loop over this rank's share of the JSON paths file (see `write_paths_file`); without
        one, datatrove's own (every matching file in `data_folder`)."""
        if self.paths_file is None:
            yield from super().run(data, rank, world_size)
            return
        if data:
            yield from data
        paths = json.loads(Path(self.paths_file).read_text())
        counts = TaskCounts(self.progress_dir, rank)
        documents = 0
        for document in self.read_files_shard(paths[rank::world_size]):
            self.update_doc_stats(document)
            yield document  # back here once the steps after this one are done with it
            documents += 1
            counts.set(bytes=self._bytes_done + self._place(), documents=documents)
        counts.set(bytes=self._bytes_done, documents=documents)
        counts.flush()

    def _reading(self, handle: BinaryIO) -> None:
        """The file being read is at `handle`'s place (compressed: the place in the file, not the text)."""
        self._place = handle.tell

    def _default_adapter(self, data: dict, path: str, id_in_file: int | str) -> dict:
        no_id = data.get(self.id_key) in (None, "")
        media = data.pop("media", None)
        fields = super()._default_adapter(data, path, id_in_file)
        metadata = fields["metadata"]
        if media is not None:
            metadata["media"] = media
        if "source" in metadata:  # the row's own (Dolma rows carry one); metadata.source is the source's name
            metadata["row_source"] = metadata.pop("source")
        if no_id:
            fields["id"] = f"{path}/{id_in_file}"
            self.stat_update("ids_assigned")
        fields["id"] = str(fields["id"])
        return fields

    def _skip(self, reason: str, where: str, detail: str, count: int = 1) -> None:
        message = f"{where}: {reason.replace('_', ' ')}: {detail}"
        if self.on_error == "fail":
            raise InputError(message + " (on-error skip counts and skips these)")
        self.stat_update(f"skipped/{reason}", value=count)
        logger.warning(f"skipped {message}")

    def _where(self, filepath: str, line_number: int | None = None) -> str:
        path = self.data_folder.resolve_paths(filepath)
        return path if line_number is None else f"{path}:{line_number}"

    def _usable_text(self, row: dict, where: str) -> bool:
        text = row.get(self.text_key)
        if self.text_key not in row:
            self._skip("missing_text", where, f"no '{self.text_key}' field; keys: {sorted(row)}")
        elif text is not None and not isinstance(text, str):
            self._skip("text_not_a_string", where, f"'{self.text_key}' is a {type(text).__name__}, expected text")
        elif text is None or not text.strip():
            self._skip("empty_text", where, f"'{self.text_key}' is {'null' if text is None else 'empty'}")
        else:
            return True
        return False

    def _guarded(self, filepath: str, documents: Iterator[Document]) -> Iterator[Document]:
        """`documents`, with a file that breaks off while being read counted (or refused) as `unreadable_file`."""
        read = 0
        try:
            for document in documents:
                read += 1
                yield document
        except InputError:
            raise
        except UNREADABLE as exc:
            self._unreadable(filepath, exc, read)
        finally:
            self._bytes_done += self.data_folder.size(filepath)
            self._place = lambda: 0

    def _unreadable(self, filepath: str, exc: Exception, documents_read: int) -> None:
        self._skip("unreadable_file", self._where(filepath),
                   f"{type(exc).__name__}: {exc} (damaged, truncated or not in the format its name says;"
                   f" {documents_read:,} documents before it were kept)")


class CountingJsonlReader(_CountingSkips, JsonlReader):
    """JsonlReader that counts (or, on `fail`, raises on) bad encodings, malformed JSON, missing, empty or
    non-text text, documents over `max_document_bytes` and files that cannot be decompressed to their end."""

    name = "JSONL reader (counting skips)"

    def __init__(
        self, *args, on_error: OnError = "fail", max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        progress_dir: str | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.on_error = on_error
        self.max_document_bytes = max_document_bytes
        self.progress_dir = progress_dir

    def _parse(self, raw: bytes, where: str) -> dict | None:
        if len(raw) > self.max_document_bytes:
            self._skip("too_large", where, f"{len(raw):,} bytes, over {self.max_document_bytes:,}")
            return None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._skip("bad_encoding", where, f"not UTF-8 ({exc.reason} at byte {exc.start})")
            return None
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self._skip("malformed_json", where, f"expected one JSON object per line ({exc})")
            return None
        if not isinstance(row, dict):
            self._skip("not_an_object", where, f"expected a JSON object, got {type(row).__name__}")
            return None
        return row if self._usable_text(row, where) else None

    def read_file(self, filepath: str) -> Iterator[Document]:
        return self._guarded(filepath, self._documents(filepath))

    def _documents(self, filepath: str) -> Iterator[Document]:
        compression = infer_compression(filepath) if self.compression == "infer" else self.compression
        with self.data_folder.open(filepath, "rb") as raw, \
                (compr[compression](raw, mode="rb") if compression else raw) as stream:
            self._reading(raw)
            # zstd's decompressing reader is not line-iterable; a buffered reader over it is
            handle = stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream)
            for index, raw in enumerate(handle):
                if index == 0:
                    raw = raw.removeprefix(BOM)
                if not raw.strip():
                    continue
                with self.track_time():
                    row = self._parse(raw, self._where(filepath, index + 1))
                    if row is None:
                        continue
                    document = self.get_document_from_dict(row, filepath, index)
                    self.stat_update("read")
                yield document


class CountingParquetReader(_CountingSkips, ParquetReader):
    """ParquetReader that counts (or, on `fail`, raises on) a file without the text column (each row a
    `missing_text`), null, empty or non-text texts, and files pyarrow cannot read."""

    name = "Parquet reader (counting skips)"

    def __init__(self, *args, on_error: OnError = "fail", progress_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_error = on_error
        self.progress_dir = progress_dir

    def read_file(self, filepath: str) -> Iterator[Document]:
        return self._guarded(filepath, self._documents(filepath))

    def _documents(self, filepath: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        with self.data_folder.open(filepath, "rb") as stream, pq.ParquetFile(stream) as parquet:
            size, rows, row_number = self.data_folder.size(filepath), max(parquet.metadata.num_rows, 1), 0
            self._place = lambda: size * row_number // rows  # pyarrow reads the footer first: no use in tell()
            columns = parquet.schema_arrow.names
            if self.text_key not in columns:
                self._skip("missing_text", self._where(filepath), f"no '{self.text_key}' column; columns: {columns}",
                           count=parquet.metadata.num_rows)
                return
            for batch in parquet.iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    row_number += 1
                    with self.track_time():
                        if not self._usable_text(row, f"{self._where(filepath)}: row {row_number}"):
                            continue
                        document = self.get_document_from_dict(row, filepath, row_number - 1)
                        self.stat_update("read")
                    yield document


class CountingWarcReader(_CountingSkips, WarcReader):
    """WarcReader that counts the response records it cannot turn into a document (non-HTML or undecodable) as
    `skipped/not_html`, and a file that breaks off or is not WARC as `skipped/unreadable_file` (or, on `fail`,
    raises), keeping the records before the damage. Request, metadata and warcinfo records are not documents."""

    name = "WARC reader (counting skips)"

    def __init__(self, *args, on_error: OnError = "fail", progress_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_error = on_error
        self.progress_dir = progress_dir

    def read_file(self, filepath: str) -> Iterator[Document]:
        return self._guarded(filepath, self._documents(filepath))

    def _documents(self, filepath: str) -> Iterator[Document]:
        from warcio.archiveiterator import ArchiveIterator

        # warcio reads the gzip members itself: every whole record before a damaged member is kept
        with self.data_folder.open(filepath, "rb") as handle:
            self._reading(handle)
            archive = ArchiveIterator(handle)
            for index, record in enumerate(_records(archive)):
                if index == 0 and record.format != "warc":
                    raise DamagedArchive(f"not a WARC file (its first record reads as {record.format or 'nothing'})")
                if record.rec_type not in ("response", "conversion"):
                    continue
                with self.track_time():
                    extracted = process_record(record)
                    while record.raw_stream.read(1 << 20):  # what process_record left unread (a skipped type)
                        pass
                    if getattr(record.raw_stream, "limit", 0) > 0:
                        raise DamagedArchive(f"record {index} ends before its Content-Length")
                    document = self.get_document_from_dict(extracted, filepath, index) if extracted else None
                    if document is None:
                        self.stat_update("skipped/not_html")
                        logger.warning(f"skipped {filepath}: record {index}: not HTML, or not decodable")
                        continue
                yield document
            size = self.data_folder.size(filepath)
            if archive.offset < size:
                raise DamagedArchive(f"{size - archive.offset:,} bytes after byte {archive.offset:,} are no whole"
                                     " record")


def _records(archive) -> Iterator:
    """warcio's records, with what warcio raises on a damaged file (ArchiveLoadFailed, zlib errors, and on some
    cuts an AttributeError from inside warcio) as `DamagedArchive`."""
    iterator = iter(archive)
    for index in itertools.count():
        try:
            record = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - any failure to parse the next record is damage
            where = "not a WARC file, or damaged from its start" if index == 0 else f"record {index}"
            raise DamagedArchive(f"{where}: {type(exc).__name__}: {exc}") from exc
        yield record
