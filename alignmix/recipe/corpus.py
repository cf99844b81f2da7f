"""The corpus sections: sources, tagging and synthetic sets."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from alignmix.recipe.base import NOT_IN_KEY, Identifier, Strict, only_in_key_of
from alignmix.recipe.paths import ExistingPath, ScenarioSpec

DEDUP_THRESHOLD = 0.8  # MinHash Jaccard similarity above which a synthetic document duplicates an earlier one


class GeneratedCorpus(Strict):
    """A seeded web-like corpus written by alignmix itself (for demos and tests)."""

    documents: PositiveInt = 2000
    """documents written, in `tagging.tasks` shards"""
    misaligned_ai_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """share: stories of misbehaving AI"""
    aligned_ai_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """share: stories of AI behaving well (rest: web)"""

    @model_validator(mode="after")
    def _shares_fit(self) -> GeneratedCorpus:
        if self.misaligned_ai_share + self.aligned_ai_share > 1.0:
            raise ValueError("misaligned_ai_share + aligned_ai_share must not exceed 1")
        return self


OnError = Literal["fail", "skip"]  # a bad input line: stop naming it, or count and skip it
Executor = Literal["local", "ray", "slurm"]  # datatrove's executors for tagging
FileFormat = Literal["jsonl", "parquet", "warc"]  # the corpus files datatrove reads
FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {  # how each format's files end (`alignmix tag` detects by them)
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz"),
    "parquet": (".parquet",),
    "warc": (".warc", ".warc.gz"),
}


def formats_under(paths: list[Path], wanted: str) -> set[str]:
    """The formats of the files `paths` name or hold (by their names); stops at the first file of `wanted`."""
    found: set[str] = set()
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            kind = next((f for f, suffixes in FORMAT_SUFFIXES.items() if file.name.endswith(suffixes)), None)
            if kind == wanted:
                return {wanted}
            if kind is not None:
                found.add(kind)
    return found

Stance = Literal["aligned", "misaligned", "neutral"]  # a document's stance on AI alignment (the stance classifier's)
SynthStance = Literal["aligned", "misaligned"]  # the stances synthetic documents are written in


class AssumedStatistics(Strict):
    """Statistics a recipe states for a source, so that it plans without data (e.g. the paper's 9.3% flagged).

    `flagged_share` and `stance_shares` are shares of the source's tokens.
    """

    tokens: PositiveInt
    """the source's size in tokens, for planning without data"""
    flagged_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """flagged share; for planning `flagged` selections"""
    stance_shares: dict[Stance, Annotated[float, Field(ge=0.0, le=1.0)]] = {}
    """per-stance shares, for `stance` selects"""


class CorpusSource(Strict):
    """One named corpus: files read through datatrove readers, a generated corpus, or (plan only) statistics."""

    name: Identifier
    """unique source name, used by mixture entries' `source`"""
    paths: list[ExistingPath] = []
    """files, or folders searched recursively for files ending as `format` expects"""
    format: FileFormat = "jsonl"
    """file format; warc records are extracted to text with Trafilatura; unset, detected from the files' names where
    they hold no jsonl"""
    text_key: str = "text"
    """jsonl/parquet field holding the text; a row without text is a bad line"""
    id_key: str = "id"
    """jsonl/parquet field holding the document id (if missing: file/index)"""
    generate: Annotated[GeneratedCorpus | None, Field(json_schema_extra=only_in_key_of("corpus"))] = None
    assumed: AssumedStatistics | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> CorpusSource:
        if self.paths and self.generate is not None:
            raise ValueError("give either `paths` (files to read) or `generate` (a generated corpus), not both")
        if not self.paths and self.generate is None and self.assumed is None:
            raise ValueError("give `paths` (files to read), `generate` (a generated corpus) or `assumed` statistics")
        return self

    @model_validator(mode="after")
    def _format_of_the_files(self) -> CorpusSource:
        """Without `format:`, files of one other format (a folder of .warc.gz) are read as that format, as `alignmix
        tag` reads them; files of none of `format`'s endings, or of several formats, are refused with the fix."""
        found = formats_under(self.paths, self.format) if self.paths else {self.format}
        if not found or self.format in found:
            return self
        shown = ", ".join(sorted(found))
        if "format" not in self.model_fields_set and len(found) == 1:
            object.__setattr__(self, "format", found.pop())  # frozen model: set once, while validating
            return self
        if "format" in self.model_fields_set:
            raise ValueError(f"format {self.format}: `paths` hold no files ending in"
                             f" {', '.join(FORMAT_SUFFIXES[self.format])} but {shown} files; set `format:` to match")
        raise ValueError(f"`paths` hold files of several formats ({shown}) and no jsonl: give `format:`, one source"
                         " per format")

    @property
    def has_data(self) -> bool:
        return bool(self.paths) or self.generate is not None


class Corpus(Strict):
    sources: Annotated[list[CorpusSource], Field(min_length=1)]


class Blocklist(Strict):
    """Term lists, one file per category; `categories: null` uses every shipped category."""

    categories: list[str] | None = None
    """category names (term-list file stems) to use; null: every list in the folder"""
    lists_dir: ExistingPath | None = None
    """folder of `<category>.txt` term lists; default: the shipped lists"""


class ClassifierSpec(Strict):
    """A trained classifier folder (`alignmix classifiers train`); blocklist-flagged documents scoring below
    `threshold` are unflagged."""

    model: ExistingPath
    """folder written by `alignmix classifiers train`"""
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """flagged documents scoring below it are unflagged"""


class Tagging(Strict):
    """Blocklist tagging, optionally confirmed by a classifier; a bad input line fails the run (`on_error:
    fail`) or is counted and skipped."""

    blocklist: Blocklist = Blocklist()
    classifier: ClassifierSpec | None = None
    stance_classifier: ExistingPath | None = None
    """labels the stance of flagged documents"""
    tasks: PositiveInt = 1
    """parallel tasks per source (at most one per file); generated corpus shards"""
    on_error: OnError = "fail"
    """a bad input line: `fail` stops the run naming it, `skip` counts and skips it"""


SurfaceForm = Literal[
    "research_paper", "news_article", "lecture_transcript", "scifi_passage", "movie_summary", "textbook_chapter"
]


class SynthServer(Strict):
    """An OpenAI-compatible server writing a synthetic set (`generator: openai` or `vllm`); the key is read from
    the environment variable `api_key_env`, never from the recipe. With `generator: vllm` and no `base_url`,
    alignmix starts vLLM itself on `model` (a local model) for the stage and stops it afterwards."""

    base_url: str | None = None
    """the server's API root, e.g. http://127.0.0.1:8000/v1; null (vllm): start one on `model`"""
    model: str
    """the model name sent in each request; without base_url a transformers or litgpt folder, or
    builtin:SmolLM2-135M-Instruct"""
    api_key_env: Annotated[str, Field(json_schema_extra=NOT_IN_KEY)] = "OPENAI_API_KEY"
    """env variable with the API key"""
    concurrency: Annotated[PositiveInt, Field(json_schema_extra=NOT_IN_KEY)] = 64
    """requests (and connections) at once"""
    max_tokens: PositiveInt = 1024
    """completion tokens per request; a document cut off by it is dropped"""
    temperature: Annotated[float, Field(ge=0.0)] = 0.7
    """sampling temperature"""
    timeout: Annotated[float, Field(gt=0.0, json_schema_extra=NOT_IN_KEY)] = 120.0
    """seconds the server may stay silent (answers are streamed)"""
    max_retries: Annotated[int, Field(ge=0, json_schema_extra=NOT_IN_KEY)] = 6
    """retries of 429/5xx/timeouts"""
    min_words: PositiveInt = 80
    """documents with fewer words are dropped"""
    max_words: PositiveInt = 4000
    """documents with more words are dropped"""


class SynthSet(Strict):
    """Synthetic documents grounded in training-split scenario questions, from the offline template generator or
    an LLM server (each surface form gets documents_per_scenario / len(surface_forms) documents per scenario)."""

    name: Identifier
    """unique set name, used by mixture entries' `source`"""
    generator: Literal["offline", "openai", "vllm"] = "offline"
    """offline: templates; openai/vllm: the `server`'s LLM"""
    server: SynthServer | None = None
    stance: SynthStance
    """the stance every document is written in"""
    scenarios: ScenarioSpec = "builtin:tiny"
    """scenario questions (builtin:NAME or a file/folder); training split only"""
    surface_forms: Annotated[list[SurfaceForm], Field(min_length=1)] = list(typing.get_args(SurfaceForm))
    """doc genres"""
    documents_per_scenario: PositiveInt = 1
    """documents per training-split question"""
    assumed: AssumedStatistics | None = None

    @model_validator(mode="after")
    def _server_matches_generator(self) -> "SynthSet":
        if self.generator == "offline" and self.server is not None:
            raise ValueError("`server` is for generator openai or vllm; the offline generator takes none")
        if self.generator != "offline":
            if self.server is None:
                raise ValueError(f"generator {self.generator} needs `server` (base_url, model)")
            if self.server.base_url is None and self.generator != "vllm":
                raise ValueError(f"generator {self.generator} needs `server.base_url`; only vllm starts a local"
                                 " server on `server.model`")
            if self.documents_per_scenario % len(self.surface_forms):
                raise ValueError(
                    f"documents_per_scenario ({self.documents_per_scenario}) must be a multiple of the"
                    f" {len(self.surface_forms)} surface forms for generator {self.generator}"
                )
        return self


class Synth(Strict):
    sets: list[SynthSet] = []
