"""Which alignmix code produced a stage: the package version and a content hash of the stage's source files."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from alignmix import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_SUFFIXES = {".py", ".txt", ".yaml", ".jsonl", ".json", ".jinja"}  # not build products such as a compiled .hsdb


@functools.cache
def _source_sha256(module: str) -> str:
    """sha256 over a module's file, or a package's files (source and shipped data, no bytecode), by path."""
    package = PACKAGE_DIR / Path(*module.split(".")[1:])
    files = sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES) if package.is_dir() \
        else [package.with_suffix(".py")]
    if not files or not files[0].is_file():
        raise ValueError(f"no alignmix source for '{module}'")
    total = hashlib.sha256()
    for file in files:
        total.update(str(file.relative_to(PACKAGE_DIR)).encode() + b"\0" + file.read_bytes())
    return total.hexdigest()


def code_version(modules: tuple[str, ...]) -> dict[str, str]:
    """{"alignmix": version, "sha256": hash of `modules`' source} ("alignmix.corpus", "alignmix.graph", ...)."""
    total = hashlib.sha256()
    for module in sorted(modules):
        total.update(module.encode() + b"\0" + _source_sha256(module).encode())
    return {"alignmix": __version__, "sha256": total.hexdigest()}


_SHARED_CODE = ("alignmix.hashing", "alignmix.jsonl", "alignmix.recipe", "alignmix.errors", "alignmix.outputs")
_SCENARIOS = ("alignmix.scenarios", "alignmix.scenarios_data")
STAGE_CODE: dict[str, tuple[str, ...]] = {  # each stage's package and the base packages it imports
    "corpus": ("alignmix.corpus",),
    "tag": ("alignmix.corpus", "alignmix.classifiers", "alignmix.llm", "alignmix.progress", *_SCENARIOS),
    "synth": ("alignmix.synth", "alignmix.llm", "alignmix.checkpoints", "alignmix.progress", *_SCENARIOS),
    "base": ("alignmix.checkpoints", "alignmix.progress"),
    "tokenizer": ("alignmix.corpus", "alignmix.checkpoints", "alignmix.progress"),
    "tokens": ("alignmix.corpus", "alignmix.checkpoints", "alignmix.progress", *_SCENARIOS),
    "mix": ("alignmix.corpus", "alignmix.checkpoints", "alignmix.classifiers", "alignmix.progress", *_SCENARIOS),
    "train": ("alignmix.train", "alignmix.checkpoints", "alignmix.llm", "alignmix.progress", *_SCENARIOS),
    "post_train": ("alignmix.train", "alignmix.checkpoints", "alignmix.llm", "alignmix.progress", *_SCENARIOS),
    "eval": ("alignmix.eval", "alignmix.checkpoints", "alignmix.llm", "alignmix.progress", *_SCENARIOS),
    "report": ("alignmix.report",),
}


def code_of(kind: str) -> tuple[str, ...]:
    """The alignmix source a stage of this kind runs (hashed into its key): its packages and the wiring here."""
    return (*STAGE_CODE[kind], *_SHARED_CODE)
