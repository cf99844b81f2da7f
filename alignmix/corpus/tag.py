"""Tagging as a datatrove pipeline: read -> (extract) -> AI-discourse tagger -> jsonl.gz shards, with statistics.

Formats: jsonl (plain, .gz, .zst) and parquet through readers that count or refuse bad lines and rows, WARC
through datatrove's WarcReader followed by Trafilatura text extraction.
Executors: datatrove's LocalPipelineExecutor, RayPipelineExecutor on a running Ray cluster, or
SlurmPipelineExecutor (an array job and its stats merge; `tag_files` waits for both).
Progress: the input read (MB of the files' size on disk) and the documents tagged, with rate and ETA.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers import JsonlWriter

from alignmix.classifiers.blocklist import Blocklist
from alignmix.corpus import METADATA_KEY
from alignmix.corpus.readers import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    SKIP_REASONS,
    CountingJsonlReader,
    CountingParquetReader,
    CountingWarcReader,
    InputError,
    write_paths_file,
)
from alignmix.corpus.engines import SlurmSettings, Watch, clear_unless_planned_as, run_pipeline
from alignmix.hashing import files_identity
from alignmix.outputs import PIPELINE_STATS_FILE, SHARD_SUFFIX, STATS_FILE, Documents, shards_in
from alignmix.recipe import FORMAT_SUFFIXES, ClassifierSpec, Executor, FileFormat, OnError

DEFAULT_THRESHOLD = ClassifierSpec.model_fields["threshold"].default  # the recipe's classifier threshold
SUFFIXES = FORMAT_SUFFIXES
EXTRACTOR_NAME = "Trafilatura"


class AIDiscourseTagger(PipelineStep):
    """Adds `metadata["ai_discourse"]` = {flagged, categories, terms, score, stance} from the blocklist.

    With a trained classifier (`classifier_dir`), a document the blocklist flags is scored by it and stays
    flagged only at `threshold` or above (blocklist -> classifier); `score` holds the classifier's score.
    With a stance classifier (`stance_dir`), each flagged document's `stance` is labelled.
    """

    name = "AI-discourse tagger"
    type = "TAGGER"

    def __init__(
        self, lists_dir: Path | None = None, categories: list[str] | None = None,
        classifier_dir: Path | None = None, threshold: float = DEFAULT_THRESHOLD, stance_dir: Path | None = None,
    ):
        super().__init__()
        self.stance_dir = stance_dir
        self.lists_dir = lists_dir
        self.categories = categories
        self.classifier_dir = classifier_dir
        self.threshold = threshold
        self._blocklist: Blocklist | None = None
        # Compile the term database here, in the process that builds the pipeline, so that it lands in the cache
        # before any task starts: tasks then load it instead of each compiling it (a cold run's main cost).
        Blocklist.from_lists(lists_dir, categories)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self._blocklist is None:
            self._blocklist = Blocklist.from_lists(self.lists_dir, self.categories)
        classifier = None
        if self.classifier_dir is not None:
            from alignmix.classifiers.models import load_classifier

            classifier = load_classifier(self.classifier_dir)
        stance = None
        if self.stance_dir is not None:
            from alignmix.classifiers.models import load_stance_classifier

            stance = load_stance_classifier(self.stance_dir)
        counts: Counter[str] = Counter()  # reported once at the end: a stat update per term per document is slow
        for document in data:
            with self.track_time():
                result = self._blocklist.tag(document.text)
                document.metadata[METADATA_KEY] = tags = result.as_metadata()
                if classifier is not None and result.flagged:
                    tags["score"] = score = classifier.score([document.text])[0]
                    if score < self.threshold:
                        result.flagged = tags["flagged"] = False
                        counts["unflagged_by_classifier"] += 1
                if stance is not None and result.flagged:
                    tags["stance"] = stance.predict([document.text])[0]
                    counts[f"stance/{tags['stance']}"] += 1
                counts["flagged" if result.flagged else "not_flagged"] += 1
                if result.flagged:
                    counts.update(f"category/{category}" for category in result.categories)
                for term, count in result.terms.items():
                    counts[f"term/{term}"] += count
            yield document
        for key, value in sorted(counts.items()):
            self.stat_update(key, value=value)


def detect_format(path: Path) -> FileFormat:
    for name, suffixes in SUFFIXES.items():
        if path.name.endswith(suffixes):
            return name  # type: ignore[return-value]
    known = ", ".join(s for suffixes in SUFFIXES.values() for s in suffixes)
    raise ValueError(f"{path}: unknown input format; expected a file ending in one of {known}")


@dataclass(frozen=True)
class InputFiles:
    """The files a tag run reads, once each, and what was left out of what it was given."""

    files: list[Path]
    repeated: int = 0  # names of a file already named (the same file twice, or inside a folder given too)
    under_output: int = 0  # files inside the output folder, which a run must not read while writing it

    def notes(self) -> str:
        """What was left out, for the console; empty when nothing was."""
        said = []
        if self.repeated:
            said.append(f"{self.repeated:,} file(s) named more than once (a repeated path, or a file inside a"
                        " folder also given) are read once")
        if self.under_output:
            said.append(f"{self.under_output:,} file(s) inside the output folder are not read")
        return "; ".join(said)


def input_files(paths: list[Path], suffixes: tuple[str, ...], output: Path | None = None) -> InputFiles:
    """Expand folders into the files beneath them with one of `suffixes` (files are kept as given), each file
    once after resolving links and `..`, leaving out anything inside `output`."""
    output = output.resolve() if output is not None else None
    seen: dict[Path, Path] = {}
    repeated = under_output = 0
    for path in paths:
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes)) if path.is_dir() \
            else [path]
        for file in found:
            resolved = file.resolve()
            if output is not None and resolved.is_relative_to(output):
                under_output += 1
            elif resolved in seen:
                repeated += 1
            else:
                seen[resolved] = file
    return InputFiles(list(seen.values()), repeated, under_output)


def _readers(
    file_format: FileFormat, root: str, paths_file: str, text_key: str, id_key: str, source_name: str,
    on_error: OnError, max_document_bytes: int, progress_dir: str,
) -> list[PipelineStep]:
    common = {"paths_file": paths_file, "default_metadata": {"source": source_name}, "progress_dir": progress_dir}
    if file_format == "jsonl":
        return [CountingJsonlReader(
            root, text_key=text_key, id_key=id_key, on_error=on_error, max_document_bytes=max_document_bytes,
            **common,
        )]
    if file_format == "parquet":
        return [CountingParquetReader(root, text_key=text_key, id_key=id_key, on_error=on_error, **common)]
    from datatrove.pipeline.extractors import Trafilatura

    return [CountingWarcReader(root, on_error=on_error, **common), Trafilatura(favour_precision=True)]


SHARD_NAME = re.compile(r"^(?:[a-z]+-)?\d{5}\.jsonl\.gz$")
INPUTS_FILE = "tag_inputs.json"


def reset_if_inputs_changed(out_dir: Path, inputs: dict) -> bool:
    """Clear a tag output folder written for other inputs or settings (its shards, stats and datatrove completion
    markers), so a rerun into it tags the new input instead of reporting the old run; True when it was cleared.
    `inputs` describes the run (files with sizes and mtimes, settings) and is kept in `out_dir/tag_inputs.json`."""
    return clear_unless_planned_as(out_dir / INPUTS_FILE, inputs, out_dir / "logs", lambda: clear_tag_output(out_dir))


def clear_tag_output(out_dir: Path) -> None:
    """Remove what a tag run wrote into `out_dir`: shards, stats.json, datatrove's logs and completion markers."""
    shutil.rmtree(out_dir / "logs", ignore_errors=True)
    for name in (STATS_FILE, INPUTS_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for shard in (p for p in shards_in(out_dir) if SHARD_NAME.match(p.name)):
        shard.unlink()


def describe_inputs(files: list[Path], settings: dict) -> dict:
    """What a tag run reads: each file's resolved path, size and modification time, and its settings."""
    return {"files": files_identity([f.resolve() for f in files]),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}}


def tag_files(
    files: list[Path],
    out_dir: Path,
    *,
    shards_dir: Path | None = None,
    file_format: FileFormat = "jsonl",
    text_key: str = "text",
    id_key: str = "id",
    source_name: str,
    lists_dir: Path | None = None,
    categories: list[str] | None = None,
    tasks: int = 1,
    executor: Executor = "local",
    on_error: OnError = "fail",
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    shard_prefix: str = "",
    classifier_dir: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    stance_dir: Path | None = None,
    slurm: SlurmSettings | None = None,
    progress_out: TextIO | None = None,
) -> Counter[str]:
    """Tag `files` into jsonl.gz shards (default `out_dir/data`); resumes per task; returns the raw counts.

    datatrove's logs go to `out_dir/logs`; `write_stats` turns the counts into `stats.json`. Progress (`tag/NAME`:
    input MB read, documents tagged) goes to `progress_out` (default: stdout).
    """
    if not files:
        raise InputError(f"source '{source_name}': no input files (expected files ending in {SUFFIXES[file_format]})")
    root = Path(os.path.commonpath([f.resolve().parent for f in files]))
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = out_dir / "logs" / (shard_prefix.rstrip("-") or "")
    logs.mkdir(parents=True, exist_ok=True)
    paths_file = logs / "input_paths.json"
    write_paths_file(paths_file, [str(f.resolve().relative_to(root)) for f in files])
    pipeline = [
        *_readers(file_format, str(root), str(paths_file), text_key, id_key, source_name, on_error,
                  max_document_bytes, str(logs)),
        AIDiscourseTagger(
            lists_dir=lists_dir, categories=categories, classifier_dir=classifier_dir, threshold=threshold,
            stance_dir=stance_dir,
        ),
        JsonlWriter(str(shards_dir or Documents(out_dir).data_dir),
                    output_filename=f"{shard_prefix}${{rank}}{SHARD_SUFFIX}"),
    ]
    watch = Watch(f"tag/{source_name}", sum(f.stat().st_size for f in files), "bytes", "documents", progress_out)
    run_pipeline(executor, pipeline, min(tasks, len(files)), logs, slurm or SlurmSettings(), "alignmix-tag", "tagging",
                 watch)
    return pipeline_counts(json.loads((logs / PIPELINE_STATS_FILE).read_text()))


def pipeline_counts(pipeline_stats: list[dict]) -> Counter[str]:
    """The counts alignmix reports, from datatrove's merged per-step stats."""
    counts: Counter[str] = Counter()
    for step in pipeline_stats:
        step_counts = {k: (v["total"] if isinstance(v, dict) else v) for k, v in step.get("stats", {}).items()}
        if EXTRACTOR_NAME in step.get("name", ""):
            counts["skipped/extraction_failed"] += step_counts.get("total", 0) - step_counts.get("forwarded", 0)
            continue
        for key in ("flagged", "not_flagged", "unflagged_by_classifier", "ids_assigned"):
            counts[key] += step_counts.get(key, 0)
        for key, value in step_counts.items():
            if key.startswith(("skipped/", "category/", "term/", "stance/")):
                counts[key] += value
    return counts


def write_stats(out_dir: Path, counters: list[Counter[str]]) -> dict:
    """Write `out_dir/stats.json`: documents in = kept + flagged + skipped (by reason), categories, top terms."""
    counts: Counter[str] = Counter()
    for counter in counters:
        counts.update(counter)
    skipped = {reason: counts[f"skipped/{reason}"] for reason in SKIP_REASONS if counts[f"skipped/{reason}"]}
    tagged = counts["flagged"] + counts["not_flagged"]
    stats = {
        "documents_in": tagged + sum(skipped.values()),
        "documents_tagged": tagged,
        "documents_kept": counts["not_flagged"],
        "documents_flagged": counts["flagged"],
        "documents_skipped": sum(skipped.values()),
        "unflagged_by_classifier": counts["unflagged_by_classifier"],
        "ids_assigned": counts["ids_assigned"],
        "skipped_by_reason": skipped,
        "flag_rate": counts["flagged"] / tagged if tagged else 0.0,
        "categories": {k.removeprefix("category/"): v for k, v in sorted(counts.items()) if k.startswith("category/")},
        "stance": {k.removeprefix("stance/"): v for k, v in sorted(counts.items()) if k.startswith("stance/")},
        "top_terms": dict(
            sorted(
                ((k.removeprefix("term/"), v) for k, v in counts.items() if k.startswith("term/")),
                key=lambda kv: (-kv[1], kv[0]),
            )[:25]
        ),
    }
    Documents(out_dir).write_stats(stats)
    return stats
