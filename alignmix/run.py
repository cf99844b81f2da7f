"""The stage runner: content-hash caching, resume of an interrupted stage, and the run manifest.

A stage's key hashes its settings, the digests of its inputs' outputs, the alignmix version and a content hash
of the alignmix source that produces it (`Stage.code`), so a fix to a stage's code reruns that stage. A stage
whose key matches a completed record, and whose outputs are still there unchanged (in size, then sha256), is
skipped; one whose output changed is run again.
A stage that was interrupted under the same key is run again without wiping its output, so the stage
can pick up where it stopped (datatrove completions, litgpt step checkpoints); under a new key its
output is cleared first. Records live in `RUN/.alignmix/`, the manifest in `RUN/manifest.json`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Literal

from alignmix.code_version import code_version
from alignmix.errors import AlignmixError
from alignmix.hashing import update_with_file
from alignmix.stderr import stderr_to

TRACKED_PACKAGES = (
    "alignmix", "torch", "litgpt", "lightning", "litdata", "datatrove", "tokenizers", "transformers", "pydantic",
)
IGNORED_DIRS = {"logs", "__pycache__"}
STEP_DIR = re.compile(r"step-\d+")


class StageFailed(AlignmixError, RuntimeError):
    """A stage's tool failed (litgpt exited, an input was missing); the message names the stage and its log."""


class RunFolderBusy(AlignmixError):
    """Another alignmix run holds the run folder's lock."""


@contextlib.contextmanager
def held_lock(lock_file: Path, on_busy: Callable[[IO[str]], None]) -> Iterator[IO[str]]:
    """Hold an OS file lock on `lock_file` (released when the process ends, even by kill -9). When another
    process holds it, `on_busy(handle)` runs first: it raises, or returns to wait for the lock."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_busy(handle)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, option: str = "--out", file: str | None = None) -> Iterator[None]:
    """Hold `RUN/.alignmix/lock` for a run, so that a second run into the same folder is refused instead of
    resuming the first one's stages. Commands that write an output folder (`alignmix tag --output`, `synth`,
    `eval`) hold it too, and `alignmix stats` holds `.alignmix/FILE.lock` for each `file` it writes in
    `run_dir`; `option` is the one that names another output."""
    target = run_dir / file if file else run_dir

    def refuse(handle: IO[str]) -> None:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        raise RunFolderBusy(
            f"{target}: another alignmix run is writing here ({holder}); wait for it to finish,"
            f" or give this one another {option}"
        )

    with held_lock(run_dir / ".alignmix" / (f"{file}.lock" if file else "lock"), refuse) as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}, since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


@dataclass
class StageContext:
    """What a stage action gets: where to write, its inputs' outputs, a log file, whether it resumes, and a cache
    folder of its own."""

    output: Path
    inputs: dict[str, Path]
    log_file: Path
    resuming: bool
    echo: Callable[[str], None]
    cache: Path  # `RUN/.alignmix/cache/<stage>/`, the stage's own, made when used: kept when a new key clears the output

    def stderr_to_log(self) -> contextlib.AbstractContextManager[None]:
        """Send this process's and its children's stderr (library logging) to the stage log."""
        return stderr_to(self.log_file)


StageKind = Literal["base", "corpus", "tag", "synth", "tokenizer", "tokens", "mix", "model", "eval", "report"]
Suite = Literal["misalignment", "em", "personality"]


@dataclass
class Stage:
    """One stage of a run. `kind` says what it makes: a released base model converted (`base`), the corpus, tags,
    synthetic sets, the tokenizer, a source's token store, a mixture, a trained `model` (a pretraining stage with
    `train` settings, SFT, DPO or a tamper stage), an `eval` of a model in one suite, or the report."""

    name: str
    output: Path  # relative to the run folder: a folder, or a single file
    settings: dict[str, Any]
    action: Callable[[StageContext], dict[str, Any]]
    depends_on: tuple[str, ...] = ()
    code: tuple[str, ...] = ()  # the alignmix packages or modules whose source produces the output (in the key)
    kind: StageKind = field(kw_only=True)
    model: str | None = field(default=None, kw_only=True)  # an eval's: the model stage it scores
    suite: Suite | None = field(default=None, kw_only=True)  # an eval's suite


@dataclass(frozen=True)
class Graph:
    """A run's stages in dependency order: iterated, looked up by name, asked for its models and evals."""

    stages: tuple[Stage, ...]

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.stages)

    def __getitem__(self, name: str) -> Stage:
        found = next((s for s in self.stages if s.name == name), None)
        if found is None:
            raise KeyError(f"no stage '{name}'; the stages are: {', '.join(self.names)}")
        return found

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def of_kind(self, kind: StageKind) -> list[Stage]:
        return [s for s in self.stages if s.kind == kind]

    @property
    def models(self) -> list[Stage]:
        """The trained models, in training order: pretraining stages with `train` settings, SFT, DPO, tampering."""
        return self.of_kind("model")

    def evals(self, suite: Suite = "misalignment") -> dict[str, Stage]:
        """The eval stages of `suite`, by the model stage each scores."""
        return {s.model: s for s in self.stages if s.kind == "eval" and s.suite == suite and s.model is not None}


@dataclass
class StageRecord:
    name: str
    status: str  # ran | resumed | skipped
    key: str
    depends_on: list[str]
    settings: dict[str, Any]
    inputs: dict[str, str]
    output: str
    output_digest: str
    seconds: float
    counts: dict[str, Any] = field(default_factory=dict)
    code: dict[str, str] = field(default_factory=dict)  # alignmix's version and the stage's source hash
    shared_from: str | None = None  # the run folder whose identical stage this one reuses (status "shared")
    kind: str = ""  # the stage's kind, model and suite (see `Stage`), from the graph that ran it
    model: str | None = None
    suite: str | None = None


def _labels(stage: Stage) -> dict[str, Any]:
    return {"kind": stage.kind, "model": stage.model, "suite": stage.suite}


def eval_records(manifest: dict[str, Any], suite: Suite = "misalignment") -> dict[str, dict[str, Any]]:
    """A manifest's records of `suite`'s eval stages, by the model stage each scores."""
    return {s["model"]: s for s in manifest["stages"] if s.get("kind") == "eval" and s.get("suite") == suite}


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        p for p in path.rglob("*") if p.is_file() and not IGNORED_DIRS.intersection(p.relative_to(path).parts)
    )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _link(source: Path, target: Path) -> None:
    """Hard-link a file, or a folder's files, at `target` (outputs are written once and never changed in place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=os.link)
    else:
        os.link(source, target)


def fingerprint(path: Path) -> list[tuple[str, int]]:
    """A cheap listing (relative path, size) that notices deleted, added or resized outputs."""
    return [(str(p.relative_to(path)) if path.is_dir() else p.name, p.stat().st_size) for p in _files(path)]


def is_step_checkpoint(relative: Path) -> bool:
    """A file inside litgpt's intermediate `step-NNNNNNNN/` folders (not `final/`)."""
    return any(STEP_DIR.fullmatch(part) for part in relative.parts[:-1])


def digest(path: Path) -> str:
    """sha256 over every output file's relative path and content (log folders excluded; .gz files by their
    decompressed content, so a rewrite of the same documents keeps the digest). Step checkpoints enter by name
    and size only: at 6.9B reading them would take longer than the stage."""
    total = hashlib.sha256()
    for file in _files(path):
        relative = file.relative_to(path) if path.is_dir() else Path(file.name)
        total.update(str(relative).encode() + b"\0")
        if is_step_checkpoint(relative):
            total.update(str(file.stat().st_size).encode())
        else:
            update_with_file(total, file)
    return total.hexdigest()


def stage_key(stage: Stage, input_digests: dict[str, str]) -> str:
    payload = {"stage": stage.name, "settings": stage.settings, "inputs": input_digests, "code": code_version(stage.code)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Runner:
    """Runs stages in the given (dependency) order into `run_dir`, writing the manifest after each one."""

    def __init__(self, run_dir: Path, stages: Iterable[Stage], recipe_info: dict[str, Any], echo: Callable[[str], None],
                 store: Path | None = None):
        """`store` (a sweep's) holds every finished stage's output by key, hard-linked: a stage whose key is there
        is linked into this run folder instead of run again."""
        self.run_dir = run_dir
        self.stages = list(stages)
        self.recipe_info = recipe_info
        self.echo = echo
        self.store = store
        self.state_dir = run_dir / ".alignmix"
        names = [s.name for s in stages]
        for stage in stages:
            missing = [d for d in stage.depends_on if d not in names[: names.index(stage.name)]]
            if missing:
                raise ValueError(f"stage '{stage.name}' depends on {missing}, which do not run before it")

    def _state_file(self, name: str) -> Path:
        return self.state_dir / f"{name.replace('/', '--')}.json"

    def _read_state(self, name: str) -> dict[str, Any] | None:
        path = self._state_file(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def _write_state(self, name: str, state: dict[str, Any]) -> None:
        path = self._state_file(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def run(self) -> dict[str, Any]:
        """Run every stage under the run folder's lock; returns the manifest."""
        with run_folder_lock(self.run_dir):
            return self._run_all()

    def _run_all(self) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        records: list[StageRecord] = []
        digests: dict[str, str] = {}
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for position, stage in enumerate(self.stages, start=1):
            record = self._run_stage(stage, digests, f"[{position}/{len(self.stages)}]")
            digests[stage.name] = record.output_digest
            records.append(record)
            self._write_manifest(records, started)
        return self._write_manifest(records, started)

    def _run_stage(self, stage: Stage, digests: dict[str, str], prefix: str) -> StageRecord:
        inputs = {name: digests[name] for name in stage.depends_on}
        key = stage_key(stage, inputs)
        output = self.run_dir / stage.output
        state = self._read_state(stage.name)
        if state and state["key"] == key and state["status"] == "done" and state["fingerprint"] == [
            list(item) for item in fingerprint(output)
        ]:
            if digest(output) == state["record"]["output_digest"]:
                self.echo(f"{prefix} {stage.name}: unchanged, skipped")
                return StageRecord(**{**state["record"], **_labels(stage), "status": "skipped", "seconds": 0.0})
            self.echo(f"{prefix} {stage.name}: its output changed since it was written (sha256 differs from the"
                      " manifest's); running it again")
            state = None
        resuming = bool(state and state["key"] == key and state["status"] == "running")
        with self._store_lock(stage, key, prefix):
            if not resuming:
                _remove(output)
                if (shared := self._from_store(stage, key, output)) is not None:
                    self.echo(f"{prefix} {stage.name}: shared with {Path(shared.shared_from).name}")
                    return shared
            return self._run_action(stage, key, inputs, output, resuming, prefix)

    @contextlib.contextmanager
    def _store_lock(self, stage: Stage, key: str, prefix: str) -> Iterator[None]:
        """With a store, hold `STORE/<key>.lock` while the stage is shared or run, so that conditions running at
        once (a sweep's Slurm jobs) run an identical stage once: the others wait, then link it."""
        if self.store is None:
            yield
            return
        waiting = f"{prefix} {stage.name}: waiting for another run of the identical stage"
        with held_lock(self.store / f"{key}.lock", lambda _: self.echo(waiting)):
            yield

    def _run_action(self, stage: Stage, key: str, inputs: dict[str, str], output: Path, resuming: bool,
                    prefix: str) -> StageRecord:
        self._write_state(stage.name, {"key": key, "status": "running"})
        self.echo(f"{prefix} {stage.name}: {'resuming' if resuming else 'running'}")
        start = time.perf_counter()
        context = StageContext(
            output=output,
            inputs={name: self.run_dir / self._stage(name).output for name in stage.depends_on},
            log_file=self.run_dir / "logs" / f"{stage.name.replace('/', '--')}.log",
            resuming=resuming,
            echo=self.echo,
            cache=self.state_dir / "cache" / stage.name.replace("/", "--"),
        )
        try:
            counts = stage.action(context)
        except (AlignmixError, RuntimeError, OSError) as exc:
            with context.log_file.open("a", encoding="utf-8") as log:
                traceback.print_exc(file=log)
            raise StageFailed(f"stage '{stage.name}' failed: {exc} (log: {context.log_file})") from exc
        seconds = time.perf_counter() - start
        record = StageRecord(
            name=stage.name, status="resumed" if resuming else "ran", key=key, depends_on=list(stage.depends_on),
            settings=stage.settings, inputs=inputs, output=str(stage.output), output_digest=digest(output),
            seconds=round(seconds, 3), counts=counts, code=code_version(stage.code), **_labels(stage),
        )
        self._write_state(
            stage.name,
            {"key": key, "status": "done", "fingerprint": fingerprint(output), "record": record.__dict__},
        )
        self._to_store(key, output, record)
        self.echo(f"{prefix} {stage.name}: done in {seconds:.1f}s")
        return record

    def _from_store(self, stage: Stage, key: str, output: Path) -> StageRecord | None:
        """Link a stored stage with this key into `output` and record it as done; None when the store has none."""
        entry = None if self.store is None else self.store / key
        if entry is None or not (entry / "record.json").is_file():
            return None
        stored = json.loads((entry / "record.json").read_text())
        _link(entry / "output", output)
        record = StageRecord(**{**stored["record"], **_labels(stage), "status": "shared", "seconds": 0.0,
                                "shared_from": stored["run_dir"]})
        self._write_state(stage.name, {"key": key, "status": "done", "fingerprint": fingerprint(output),
                                       "record": {**record.__dict__, "status": "ran"}})
        return record

    def _to_store(self, key: str, output: Path, record: StageRecord) -> None:
        if self.store is None or (self.store / key).exists() or not output.exists():
            return
        partial = self.store / f"{key}.{os.getpid()}.partial"
        _remove(partial)
        _link(output, partial / "output")
        (partial / "record.json").write_text(json.dumps({"run_dir": str(self.run_dir), "record": record.__dict__},
                                                        indent=2, default=str))
        partial.rename(self.store / key)

    def _stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def _write_manifest(self, records: list[StageRecord], started: str) -> dict[str, Any]:
        manifest = {
            **self.recipe_info,
            "started": started,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "packages": package_versions(),
            "stages": [record.__dict__ for record in records],
        }
        path = self.run_dir / "manifest.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        tmp.replace(path)
        return manifest
