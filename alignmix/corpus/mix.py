"""Building a stage's mixture: select, sample to the planned tokens, shuffle, tokenize and write LitData chunks.

Filter-with-replacement, upsampling and downsampling are one mechanism: an entry draws documents from its
selection in seeded shuffled passes until its planned tokens are met, so a selection smaller than its
budget is repeated (with the repetitions recorded) and a larger one is sampled.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alignmix.corpus.plan import StagePlan, entry_name, plan_stage
from alignmix.corpus.tag import METADATA_KEY
from alignmix.corpus.tokenizer import load_tokenizer
from alignmix.jsonl import read_jsonl_gz
from alignmix.recipe import Selector, TrainingStage

TOKEN_DTYPE = np.int32


@dataclass
class TokenizedDocs:
    ids: list[str]
    tags: list[dict]
    tokens: list[np.ndarray]


def tokenize_source(files: list[Path], tokenizer_dir: Path, batch_size: int = 1024) -> TokenizedDocs:
    """Read a source's documents and tokenize them, each followed by the end-of-text token."""
    tokenizer, eos = load_tokenizer(tokenizer_dir)
    docs = TokenizedDocs([], [], [])
    batch: list[str] = []

    def flush() -> None:
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            docs.tokens.append(np.asarray([*encoding.ids, eos], dtype=TOKEN_DTYPE))
        batch.clear()

    for row in read_jsonl_gz(files):
        docs.ids.append(str(row["id"]))
        docs.tags.append(row.get("metadata", {}).get(METADATA_KEY) or {})
        batch.append(row["text"])
        if len(batch) >= batch_size:
            flush()
    flush()
    return docs


def selects(selector: Selector, tags: dict) -> bool:
    """Whether a document's `ai_discourse` tags match every field the selector sets."""
    wanted = {k: v for k, v in selector.model_dump().items() if v is not None}
    return all(tags.get(key) == value for key, value in wanted.items())


def draw(lengths: list[int], budget: int, rng: random.Random) -> list[int]:
    """Indices drawn in shuffled passes until their lengths reach `budget` (the last may overshoot by one document)."""
    drawn: list[int] = []
    total = 0
    while total < budget:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        for index in order:
            drawn.append(index)
            total += lengths[index]
            if total >= budget:
                break
    return drawn


def _digest(strings: list[str]) -> str:
    digest = hashlib.sha256()
    for item in strings:
        digest.update(item.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_chunks(stream_file: Path, total: int, block_size: int, out_dir: Path) -> None:
    """Write the token stream as LitData chunks readable by `TokensLoader(block_size)`."""
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    piece = block_size * 256
    slices = [(start, min(start + piece, total)) for start in range(0, total, piece)]
    optimize(
        fn=_StreamSlice(str(stream_file), total),
        inputs=slices,
        output_dir=str(out_dir),
        chunk_size=block_size * 1024,
        item_loader=TokensLoader(block_size=block_size),
        num_workers=1,
        verbose=False,
        start_method="fork",
    )
    index_file = out_dir / "index.json"
    index = json.loads(index_file.read_text())
    index["updated_at"] = "0"  # litdata stamps the wall clock here; a fixed value keeps the chunks reproducible
    index_file.write_text(json.dumps(index, sort_keys=True))


class _StreamSlice:
    """Picklable optimize function yielding one slice of the memory-mapped token stream."""

    def __init__(self, path: str, total: int):
        self.path, self.total = path, total

    def __call__(self, bounds: tuple[int, int]):
        import torch

        stream = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r", shape=(self.total,))
        yield torch.from_numpy(np.array(stream[bounds[0] : bounds[1]]))


def build_stage_mixture(
    stage: TrainingStage, source_files: dict[str, list[Path]], tokenizer_dir: Path, out_dir: Path, seed: int
) -> dict:
    """Write `out_dir` (LitData chunks + mixture_manifest.json) atomically; returns the manifest."""
    tokenized = {name: tokenize_source(source_files[name], tokenizer_dir) for name in {e.source for e in stage.mixture}}
    selections: dict[str, list[int]] = {}
    for entry in stage.mixture:
        docs = tokenized[entry.source]
        selections[entry_name(entry)] = [i for i, tags in enumerate(docs.tags) if selects(entry.select, tags)]
    available = {
        entry_name(e): sum(len(tokenized[e.source].tokens[i]) for i in selections[entry_name(e)])
        for e in stage.mixture
    }
    plan: StagePlan = plan_stage(stage, available)

    pieces: list[tuple[str, str, np.ndarray]] = []  # (entry name, document id, tokens)
    uses: dict[str, Counter[str]] = {}
    for entry, source_plan in zip(stage.mixture, plan.sources):
        docs = tokenized[entry.source]
        chosen = selections[source_plan.name]
        rng = random.Random(f"{seed}:{stage.name}:{source_plan.name}")
        drawn = draw([len(docs.tokens[i]) for i in chosen], source_plan.tokens, rng)
        uses[source_plan.name] = Counter(docs.ids[chosen[i]] for i in drawn)
        pieces.extend((source_plan.name, docs.ids[chosen[i]], docs.tokens[chosen[i]]) for i in drawn)
    random.Random(f"{seed}:{stage.name}:shuffle").shuffle(pieces)

    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    stream_file = tmp_dir.parent / f"{out_dir.name}.tokens.bin"
    stream = np.memmap(stream_file, dtype=TOKEN_DTYPE, mode="w+", shape=(stage.tokens,))
    realised: Counter[str] = Counter()
    position = 0
    for name, _, tokens in pieces:
        take = min(len(tokens), stage.tokens - position)
        stream[position : position + take] = tokens[:take]
        realised[name] += take
        position += take
        if position == stage.tokens:
            break
    stream.flush()
    del stream
    _write_chunks(stream_file, stage.tokens, stage.seq_len + 1, tmp_dir)
    stream_file.unlink()

    manifest = {
        "stage": stage.name,
        "tokens": stage.tokens,
        "seq_len": stage.seq_len,
        "block_size": stage.seq_len + 1,
        "seed": seed,
        "sources": [
            {
                **asdict(source_plan),
                "realised_tokens": realised[source_plan.name],
                "documents_available": len(selections[source_plan.name]),
                "documents_used": len(uses[source_plan.name]),
                "max_document_repetitions": max(uses[source_plan.name].values(), default=0),
                "document_ids_sha256": _digest(sorted(f"{d}\t{n}" for d, n in uses[source_plan.name].items())),
            }
            for source_plan in plan.sources
        ],
        "chunks": {p.name: _file_sha256(p) for p in sorted(tmp_dir.iterdir()) if p.is_file()},
    }
    (tmp_dir / "mixture_manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    return manifest
