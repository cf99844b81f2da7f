"""`StreamReader` keeps one stream position per block of index pieces and sums a block's `take` on demand: its
reads equal the pieces laid end to end, across block edges, for a small block and the default one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignmix import outputs
from alignmix.outputs import MixtureIndex, StreamReader


def _mixture(folder: Path, rng: np.random.Generator, pieces: int) -> np.ndarray:
    """A token store of 50 documents (document d holds tokens d*1000, d*1000+1, ...) and an index of `pieces`
    random document prefixes; returns the stream the index describes, built independently."""
    store = folder / "store"
    store.mkdir(parents=True)
    lengths = rng.integers(1, 40, 50)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.concatenate([np.arange(d * 1000, d * 1000 + n) for d, n in enumerate(lengths)]).astype(np.uint16)
    np.save(store / "00000.tokens.npy", tokens)
    np.save(store / "00000.offsets.npy", offsets)
    document = rng.integers(0, 50, pieces)
    take = rng.integers(0, lengths[document] + 1)  # a prefix, sometimes empty
    index = MixtureIndex(folder / "index")
    index.allocate(pieces)
    for name, values in (("entry", np.zeros(pieces)), ("shard", np.zeros(pieces)), ("document", document),
                         ("take", take)):
        column = index.writable(name)
        column[:] = values
        column.flush()
    index.write_entries([{"name": "web", "source": "web"}])
    return np.concatenate([tokens[offsets[d] : offsets[d] + t] for d, t in zip(document, take)]).astype(np.int64)


@pytest.mark.parametrize("block", [3, 4096])
def test_reads_equal_the_pieces_laid_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int):
    monkeypatch.setattr(outputs, "READ_BLOCK", block)
    rng = np.random.default_rng(block)
    stream = _mixture(tmp_path, rng, 500)
    reader = StreamReader(tmp_path / "index", {"web": str(tmp_path / "store")}, {})
    assert len(reader.block_starts) == -(-500 // block) + 1 and reader.block_starts[-1] == len(stream)
    for low in [0, *rng.integers(0, len(stream) - 60, 200), len(stream) - 60]:
        for width in (1, 7, 60):
            assert reader.read(int(low), int(low) + width).tolist() == stream[low : low + width].tolist()
    assert reader.read(0, len(stream)).tolist() == stream.tolist()  # the whole stream, every block in turn
