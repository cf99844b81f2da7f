"""Content hashes shared by the runner, the mixer and the stage graph."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any


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


def file_identity(path: Path) -> list[Any]:
    """Path, size and modification time: what changes when an input file is replaced."""
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def files_identity(paths: list[Path]) -> list[list[Any]]:
    """`file_identity` of each file, folders expanded: what a stage's key holds for its input files."""
    return [
        file_identity(f) for p in paths
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()))
    ]


def derive_seed(seed: int | None, *names: object) -> int:
    """The one way alignmix draws a sub-seed: a 32-bit integer from the run's seed and the names of what it seeds
    (a stage, a source, a request id), stable across processes and Python versions."""
    return int(hashlib.sha256(":".join(map(str, (seed, *names))).encode()).hexdigest()[:8], 16)
