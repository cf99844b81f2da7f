"""Every stage output another stage (or the report) reads, in one place: a module reading or writing one of
them names it through here, never by its file name.

Documents (`corpus/<source>/`, `tag/<source>/`, `synth/<set>/`): `NNNNN.jsonl.gz` shards (a tagged source's or
synthetic set's under `data/`), and `stats.json` beside them (`synth/stats.json` for every set).

Models (`<stage>/`): `final/` (a litgpt checkpoint folder), `step-*/` checkpoints, `logs/**/metrics.csv`, and
for a pretraining stage `exposure.json`. Evals (`eval/<model>/`, `eval-em/<model>/`, ...): `results.json`.

Mixtures (`mix/<stage>/`): LitData chunks with their `index.json`, `mixture_manifest.json` (`MixtureManifest`)
and the mixture index (below).


Token store (`tokens/<source>/`, one per source, shared by every mixture that draws from it), per shard `NNNNN`
(the tagged source's shards, in order):
- `NNNNN.tokens.npy`: the shard's documents' tokens, each followed by end-of-text, in the smallest unsigned type
  that holds the vocabulary (`token_dtype`);
- `NNNNN.offsets.npy`: int64, document j is `tokens[offsets[j]:offsets[j + 1]]`;
- `NNNNN.docs.parquet`: one row per document: `id`, `id_hash` (uint64, for digests), `tokens` (its length),
  `contaminated`, and every metadata field as a flat column named by its dotted path (`metadata.ai_discourse.
  flagged`, `metadata.ai_discourse.terms.general`, `metadata.quality`); lists stay lists;
- `store.json`, written last: shards, dtype, documents, tokens.

Mixture index (`mix/<stage>/mixture_index/`, beside `mixture_manifest.json` and the chunks): one row per drawn
piece, in stream order, as `.npy` arrays: `entry` (the stage's mixture entry), `shard` and `document` (the
document's place in the entry's token store; for a replay entry shard 0 and the earlier mixture's block
number) and `take` (tokens taken from the document's start). `entries.json` names each entry's origin:
`{"name", "source"}` or `{"name", "replay", "block_size"}`. The manifest's `reads` names, relative to the mixture
folder, the token stores and replayed mixtures the index points into (`StreamReader.of` finds them there).
Sample p of a mixture is tokens [p * block_size, (p + 1) * block_size) of its stream, for p < tokens // block_size:
what the chunks hold, and what training streams without them. A stage with a share schedule is laid out in
`WINDOWS` windows of its token stream (`window_edges`): no piece crosses an edge, and each window's pieces are
shuffled among themselves.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from alignmix.errors import AlignmixError
from alignmix.hashing import file_sha256

if TYPE_CHECKING:  # polars is imported where a table is read: the GPU machine's real control has no polars
    import polars as pl

SHARD_SUFFIX = ".jsonl.gz"
SHARDS_DIR = "data"
STATS_FILE = "stats.json"
FINAL_DIR = "final"
METRICS_FILE = "metrics.csv"
EXPOSURE_FILE = "exposure.json"
RESULTS_FILE = "results.json"
MANIFEST_FILE = "mixture_manifest.json"
CHUNKS_INDEX_FILE = "index.json"
STORE_FILE = "store.json"
PIPELINE_STATS_FILE = "stats.json"  # datatrove's, in a pipeline's logging folder (not a stage output)
INDEX_DIR = "mixture_index"
INDEX_COLUMNS: dict[str, type] = {"entry": np.uint16, "shard": np.uint32, "document": np.uint32, "take": np.uint32}
META_PREFIX = "metadata."
TOKEN_DTYPE = np.int32  # a sample's token type, in the chunks and streamed (what litgpt's TokensLoader reads)
WINDOWS = 100  # windows per scheduled stage: hundredths of its token stream


class DiskFullError(AlignmixError):
    """An output that did not fit on its disk."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type holding every token id of a `vocab_size` vocabulary."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def window_edges(tokens: int, windows: int = WINDOWS) -> list[int]:
    """The stream positions that cut a stage of `tokens` tokens into `windows` windows: w * tokens // windows."""
    return [w * tokens // windows for w in range(windows + 1)]


def preallocated_npy(path: Path, dtype: np.dtype | type, length: int) -> None:
    """A .npy of `length` items whose blocks are reserved on disk before it is memory-mapped for writing: a full
    disk is one clear error here, never a SIGBUS when a page of a sparse file is first written."""
    header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))
    del header
    try:
        with path.open("r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"{path}: no space left on the disk for {length:,} items") from exc
        raise


@dataclass(frozen=True)
class TokenStore:
    """A source's token store folder (see the module docstring)."""

    folder: Path

    def stem(self, shard: int) -> Path:
        return self.folder / f"{shard:05d}"

    def tokens_path(self, shard: int) -> Path:
        return self.stem(shard).with_suffix(".tokens.npy")

    def offsets_path(self, shard: int) -> Path:
        return self.stem(shard).with_suffix(".offsets.npy")

    def table_path(self, shard: int) -> Path:
        return self.stem(shard).with_suffix(".docs.parquet")

    def shard_done(self, shard: int) -> bool:
        return all(p.is_file() for p in (self.tokens_path(shard), self.offsets_path(shard), self.table_path(shard)))

    @property
    def summary(self) -> dict:
        """store.json: {"shards", "dtype", "documents", "tokens"}."""
        return json.loads((self.folder / STORE_FILE).read_text())

    @property
    def shards(self) -> int:
        return int(self.summary["shards"])

    def tokens(self, shard: int) -> np.ndarray:
        return np.load(self.tokens_path(shard), mmap_mode="r")

    def offsets(self, shard: int) -> np.ndarray:
        return np.load(self.offsets_path(shard), mmap_mode="r")

    def table(self) -> pl.LazyFrame:
        """Every shard's document table, with `shard` and `document` (its place in the shard) columns; shards
        lacking a column another has read it as nulls."""
        import polars as pl

        frames = [pl.scan_parquet(self.table_path(k)).with_columns(
                      shard=pl.lit(k, pl.UInt32), document=pl.int_range(pl.len(), dtype=pl.UInt32))
                  for k in range(self.shards)]
        if not frames:
            return pl.LazyFrame(schema={"id": pl.String, "id_hash": pl.UInt64, "tokens": pl.UInt32,
                                        "contaminated": pl.Boolean, "shard": pl.UInt32, "document": pl.UInt32})
        return pl.concat(frames, how="diagonal_relaxed")


@dataclass(frozen=True)
class MixtureIndex:
    """A mixture's index folder (see the module docstring)."""

    folder: Path

    @classmethod
    def of(cls, mixture_dir: Path) -> MixtureIndex:
        return cls(mixture_dir / INDEX_DIR)

    def column(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")

    @property
    def entries(self) -> list[dict]:
        return json.loads((self.folder / "entries.json").read_text())

    def allocate(self, pieces: int) -> None:
        """Reserve every column's file for `pieces` rows on disk (a full disk fails here, before any work)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, dtype in INDEX_COLUMNS.items():
            preallocated_npy(self.folder / f"{name}.npy", dtype, pieces)

    def writable(self, name: str) -> np.memmap:
        """An allocated column, memory-mapped for writing."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r+")

    def write_entries(self, entries: list[dict]) -> None:
        (self.folder / "entries.json").write_text(json.dumps(entries, indent=2))

    def tokens_by_window(self, edges: list[int], block: int = 1 << 24) -> np.ndarray:
        """Tokens per window (between consecutive stream positions `edges`) and entry, exact, from the `entry` and
        `take` columns read `block` rows at a time: int64 [windows, entries]."""
        entry, take = self.column("entry"), self.column("take")
        bounds = np.asarray(edges, dtype=np.int64)
        windows, entries = len(edges) - 1, len(self.entries)
        counts = np.zeros((windows, entries), np.int64)
        offset = 0
        for low in range(0, len(take), block):
            ends = offset + np.cumsum(take[low : low + block], dtype=np.int64)
            starts = ends - take[low : low + block]
            first = np.searchsorted(bounds, starts, side="right") - 1
            last = np.searchsorted(bounds, ends - 1, side="right") - 1
            rows = entry[low : low + block].astype(np.int64)
            inside = (first == last) & (first >= 0) & (first < windows)
            counts += np.bincount(first[inside] * entries + rows[inside], weights=take[low : low + block][inside],
                                  minlength=windows * entries).astype(np.int64).reshape(windows, entries)
            for k in np.flatnonzero(~inside):  # a piece across an edge (or past the last): at most one per edge
                for w in range(max(int(first[k]), 0), min(int(last[k]), windows - 1) + 1):
                    part = min(int(ends[k]), int(bounds[w + 1])) - max(int(starts[k]), int(bounds[w]))
                    counts[w, rows[k]] += max(part, 0)
            offset = int(ends[-1])
        return counts


READ_BLOCK = 4096  # index pieces per block whose start a StreamReader keeps (its memory: 8 bytes a block)


class StreamReader:
    """A mixture's token stream, read from its index: `read(low, high)` gives tokens [low, high). It keeps the
    stream position of every `READ_BLOCK`-th piece only and sums a block's `take` when a read needs it, so a
    reader costs a few MB even at the paper's 400M pieces (every rank and data-loader worker holds one)."""

    @classmethod
    def of(cls, mixture_dir: Path) -> StreamReader:
        """The stream of a written mixture folder, reading the stores and mixtures its manifest names."""
        reads = Mixture(mixture_dir).manifest()["reads"]
        return cls(MixtureIndex.of(mixture_dir).folder,
                   *({name: str((mixture_dir / rel).resolve()) for name, rel in reads[kind].items()}
                     for kind in ("token_stores", "mixtures")))

    def __init__(self, index_dir: Path, stores: dict[str, str], mixtures: dict[str, str]):
        index = MixtureIndex(index_dir)
        self.entry, self.shard, self.document = index.column("entry"), index.column("shard"), index.column("document")
        self.take = index.column("take")
        firsts = np.arange(0, len(self.take), READ_BLOCK)
        sums = np.add.reduceat(self.take, firsts, dtype=np.int64) if len(self.take) else np.zeros(0, np.int64)
        self.block_starts = np.concatenate([[0], np.cumsum(sums)])  # stream position of each block's first piece
        self._block: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))  # the last block's piece ends, reused
        self.stores, self.mixtures, self.origins = stores, mixtures, index.entries
        self._shards: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._replays: dict[str, StreamReader] = {}

    def _piece(self, entry: int, shard: int, document: int, take: int) -> np.ndarray:
        origin = self.origins[entry]
        if "replay" in origin:
            name = origin["replay"]
            if name not in self._replays:
                self._replays[name] = StreamReader(MixtureIndex.of(Path(self.mixtures[name])).folder, self.stores,
                                                   self.mixtures)
            start = document * origin["block_size"]
            return self._replays[name].read(start, start + take)
        key = (origin["source"], shard)
        if key not in self._shards:
            store = TokenStore(Path(self.stores[origin["source"]]))
            self._shards[key] = store.tokens(shard), store.offsets(shard)
        tokens, offsets = self._shards[key]
        start = int(offsets[document])
        return tokens[start : start + take]

    def _ends(self, block: int) -> np.ndarray:
        """The stream positions where block `block`'s pieces end (computed on demand, the last block's kept)."""
        if self._block[0] != block:
            low = block * READ_BLOCK
            ends = self.block_starts[block] + np.cumsum(self.take[low : low + READ_BLOCK], dtype=np.int64)
            self._block = (block, ends)
        return self._block[1]

    def read(self, low: int, high: int) -> np.ndarray:
        out = np.empty(high - low, dtype=TOKEN_DTYPE)
        block = int(np.searchsorted(self.block_starts, low, side="right")) - 1
        while 0 <= block < len(self.block_starts) - 1 and self.block_starts[block] < high:
            ends, first = self._ends(block), block * READ_BLOCK
            for k in range(int(np.searchsorted(ends, low, side="right")), len(ends)):
                take = int(self.take[first + k])
                start = int(ends[k]) - take
                if start >= high:
                    return out
                a, b = max(low, start), min(high, int(ends[k]))
                piece = first + k
                tokens = self._piece(int(self.entry[piece]), int(self.shard[piece]), int(self.document[piece]), take)
                out[a - low : b - low] = tokens[a - start : b - start]
            block += 1
        return out


CONTINUATIONS_DIR = "continuations"


@dataclass(frozen=True)
class Continuation:
    """A training stage continued with a changed mixture (`alignmix train --from-step`), kept in
    `RUN/continuations/<stage>/`: `continuation.json` ({"stage", "from_step", "samples"}: the step and the
    samples the earlier run had consumed there), `mixture/` (the earlier mixture's index and manifest) and
    `step/` (the earlier run's step checkpoint). The stage's mixture keeps the earlier stream's first `samples`
    samples and re-plans the rest; training resumes from the checkpoint."""

    folder: Path

    @classmethod
    def of(cls, run_dir: Path, stage: str) -> Continuation:
        return cls(run_dir / CONTINUATIONS_DIR / stage)

    @property
    def record(self) -> dict:
        return json.loads((self.folder / "continuation.json").read_text())

    @property
    def mixture(self) -> Path:
        return self.folder / "mixture"

    @property
    def step(self) -> Path:
        return self.folder / "step"

    def exists(self) -> bool:
        return (self.folder / "continuation.json").is_file()

    def digest(self) -> dict[str, str]:
        """sha256 of the earlier mixture's manifest and of the checkpoint's weights (as recorded when they were
        written): what a stage key names."""
        return {"mixture_manifest": file_sha256(self.mixture / MANIFEST_FILE),
                "checkpoint": (self.step / "lit_model.pth.sha256").read_text().strip()}


def shard_name(index: int) -> str:
    """The file name of a folder's `index`-th documents shard."""
    return f"{index:05d}{SHARD_SUFFIX}"


def shards_in(folder: Path, recursive: bool = False) -> list[Path]:
    """The documents shards directly in `folder` (or anywhere under it), in path order."""
    pattern = f"*{SHARD_SUFFIX}"
    return sorted(folder.rglob(pattern) if recursive else folder.glob(pattern))


def documents_shards_under(folder: Path) -> list[Path]:
    """The shards of every documents folder under `folder` (each source of `tag/`, each set of `synth/`)."""
    return sorted(folder.rglob(f"{SHARDS_DIR}/*{SHARD_SUFFIX}"))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2))


@dataclass(frozen=True)
class Documents:
    """A tagged source's or synthetic set's folder: `data/NNNNN.jsonl.gz` shards and `stats.json`."""

    folder: Path

    @property
    def data_dir(self) -> Path:
        return self.folder / SHARDS_DIR

    def shard(self, index: int) -> Path:
        return self.data_dir / shard_name(index)

    def shards(self) -> list[Path]:
        return shards_in(self.data_dir)

    @property
    def stats_path(self) -> Path:
        return self.folder / STATS_FILE

    def read_stats(self) -> dict[str, Any]:
        return read_json(self.stats_path)

    def write_stats(self, stats: dict[str, Any]) -> None:
        write_json(self.stats_path, stats)


class MixtureManifest(TypedDict, total=False):
    """`mixture_manifest.json`: what a mixture holds (see docs/mixing.md); the keys its readers use."""

    stage: str
    tokens: int
    seq_len: int
    block_size: int
    seed: int
    decontamination: dict[str, Any] | None
    token_stores: dict[str, dict[str, Any]]
    sources: list[dict[str, Any]]
    chunks: dict[str, str]
    mixture_index: dict[str, str]
    delivery: str
    reads: dict[str, dict[str, str]]
    windows: list[dict[str, Any]]
    continued: dict[str, Any] | None


@dataclass(frozen=True)
class Mixture:
    """A training stage's mixture folder: LitData chunks, their `index.json`, the manifest and the index."""

    folder: Path

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_FILE

    def manifest(self) -> MixtureManifest:
        return read_json(self.manifest_path)

    def write_manifest(self, manifest: MixtureManifest) -> None:
        write_json(self.manifest_path, manifest)

    @property
    def chunks_index(self) -> Path:
        """LitData's index of the chunks (a mixture is read through it)."""
        return self.folder / CHUNKS_INDEX_FILE

    @property
    def index(self) -> MixtureIndex:
        return MixtureIndex.of(self.folder)


@dataclass(frozen=True)
class ModelOutput:
    """A model stage's folder: `final/`, `step-*/` checkpoints, its logged metrics and (pretraining) exposure."""

    folder: Path

    @property
    def final(self) -> Path:
        return self.folder / FINAL_DIR

    def steps(self) -> list[Path]:
        """The `step-*/` checkpoint folders, oldest first."""
        return sorted(self.folder.glob("step-*"))

    @property
    def metrics_path(self) -> Path:
        """Where alignmix's post-training loop logs its metrics (litgpt's pretraining logs under `logs/csv/`)."""
        return self.folder / "logs" / METRICS_FILE

    def latest_metrics(self) -> Path | None:
        """The last `metrics.csv` under `logs/`, whoever wrote it."""
        found = sorted((self.folder / "logs").rglob(METRICS_FILE))
        return found[-1] if found else None

    @property
    def exposure_path(self) -> Path:
        return self.folder / EXPOSURE_FILE


@dataclass(frozen=True)
class EvalOutput:
    """An eval stage's folder (or any folder of results): `results.json`."""

    folder: Path

    @property
    def results_path(self) -> Path:
        return self.folder / RESULTS_FILE

    def results(self) -> dict[str, Any]:
        return read_json(self.results_path)

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.results_path, results)
