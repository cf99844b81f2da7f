"""Content hashes shared by the runner, the mixer and the stage graph."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path


def update_with_file(digest: "hashlib._Hash", path: Path) -> None:
    """Feed a file's content to `digest`; a .gz file's decompressed content, since gzip headers carry a time."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def strings_sha256(strings: list[str]) -> str:
    """sha256 over strings in the given order, one per line."""
    digest = hashlib.sha256()
    for item in strings:
        digest.update(item.encode())
        digest.update(b"\n")
    return digest.hexdigest()
