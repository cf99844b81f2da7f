"""Tagging as a datatrove pipeline: read -> AI-discourse tagger -> jsonl.gz shards, with merged statistics."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import JsonlWriter

from alignmix.classifiers.blocklist import Blocklist
from alignmix.corpus import METADATA_KEY
from alignmix.corpus.readers import SKIP_REASONS, CountingJsonlReader


class AIDiscourseTagger(PipelineStep):
    """Adds `metadata["ai_discourse"]` = {flagged, categories, terms, score, stance} from the blocklist."""

    name = "AI-discourse tagger"
    type = "TAGGER"

    def __init__(self, lists_dir: Path | None = None, categories: list[str] | None = None):
        super().__init__()
        self.lists_dir = lists_dir
        self.categories = categories
        self._blocklist: Blocklist | None = None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self._blocklist is None:
            self._blocklist = Blocklist.from_lists(self.lists_dir, self.categories)
        for document in data:
            with self.track_time():
                result = self._blocklist.tag(document.text)
                document.metadata[METADATA_KEY] = result.as_metadata()
                self.stat_update("flagged" if result.flagged else "not_flagged")
                for category in result.categories:
                    self.stat_update(f"category/{category}")
                for term, count in result.terms.items():
                    self.stat_update(f"term/{term}", value=count)
            yield document


def input_files(paths: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Expand folders into the files beneath them with one of `suffixes`; files are kept as given."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes)))
        else:
            files.append(path)
    return files


def tag_files(
    files: list[Path],
    out_dir: Path,
    *,
    file_format: str = "jsonl",
    text_key: str = "text",
    id_key: str = "id",
    source_name: str,
    lists_dir: Path | None = None,
    categories: list[str] | None = None,
    tasks: int = 1,
) -> dict:
    """Tag `files` into `out_dir/data`; resumes per task (datatrove completions); returns the stage statistics."""
    if not files:
        raise ValueError(f"source '{source_name}': no input files")
    root = Path(os.path.commonpath([f.parent for f in files]))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths_file = out_dir / "input_paths.txt"
    paths_file.write_text("".join(f"{f.relative_to(root)}\n" for f in files))
    reader_class = ParquetReader if file_format == "parquet" else CountingJsonlReader
    reader = reader_class(
        str(root), paths_file=str(paths_file), text_key=text_key, id_key=id_key,
        default_metadata={"source": source_name},
    )
    pipeline = [
        reader,
        AIDiscourseTagger(lists_dir=lists_dir, categories=categories),
        JsonlWriter(str(out_dir / "data"), output_filename="${rank}.jsonl.gz"),
    ]
    executor = LocalPipelineExecutor(
        pipeline=pipeline, tasks=min(tasks, len(files)), workers=min(tasks, len(files)),
        logging_dir=str(out_dir / "logs"), skip_completed=True,
    )
    executor.run()
    stats = summarise_stats(json.loads((out_dir / "logs" / "stats.json").read_text()))
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def summarise_stats(pipeline_stats: list[dict]) -> dict:
    """Turn datatrove's merged per-step stats into documents in / kept / skipped, flag rate, categories and terms."""
    counts: Counter[str] = Counter()
    for step in pipeline_stats:
        for key, value in step.get("stats", {}).items():
            counts[key] += value["total"] if isinstance(value, dict) else value
    skipped = {reason: counts[f"skipped/{reason}"] for reason in SKIP_REASONS if counts[f"skipped/{reason}"]}
    tagged = counts["flagged"] + counts["not_flagged"]
    documents_in = tagged + sum(skipped.values())
    return {
        "documents_in": documents_in,
        "documents_tagged": tagged,
        "documents_flagged": counts["flagged"],
        "documents_skipped": sum(skipped.values()),
        "skipped_by_reason": skipped,
        "flag_rate": counts["flagged"] / tagged if tagged else 0.0,
        "categories": {k.removeprefix("category/"): v for k, v in sorted(counts.items()) if k.startswith("category/")},
        "top_terms": dict(
            sorted(
                ((k.removeprefix("term/"), v) for k, v in counts.items() if k.startswith("term/")),
                key=lambda kv: (-kv[1], kv[0]),
            )[:25]
        ),
    }
