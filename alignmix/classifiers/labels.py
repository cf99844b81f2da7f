"""A labelled set of AI discourse and ordinary web text, built from real files (e.g. ../shared/data).

Groups: `misalignment` (AI-safety textbook chapters on risks, specification gaming and goal
misgeneralization), `ai_discourse` (its other chapters), `ai_risk_questions` (Anthropic advanced-ai-risk
eval questions) and `web` (C4, Wikipedia and Common Crawl documents). Label 1 is AI discourse, 0 is not.
Rows are split 80/20 into train.jsonl and test.jsonl by a hash of their id; all.jsonl holds every row
(for rule-based classifiers, which are not trained).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from alignmix.jsonl import iter_json_lines
from alignmix.scenarios import in_held_out_share

MISALIGNMENT_CHAPTERS = {"02", "06", "07"}


def _atlas(data: Path) -> Iterator[dict]:
    for path in sorted((data / "ai-safety-atlas" / "chapters").rglob("*.md")):
        chapter = path.parent.name
        group = "misalignment" if chapter in MISALIGNMENT_CHAPTERS else "ai_discourse"
        yield {"id": f"atlas/{chapter}/{path.stem}", "text": path.read_text(encoding="utf-8"), "label": 1,
               "group": group}


def _questions(data: Path, per_file: int, rng: random.Random) -> Iterator[dict]:
    folder = data / "anthropics-evals" / "advanced-ai-risk" / "lm_generated_evals"
    for path in sorted(folder.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for index in sorted(rng.sample(range(len(rows)), min(per_file, len(rows)))):
            yield {"id": f"ai-risk/{path.stem}/{index}", "text": rows[index]["question"], "label": 1,
                   "group": "ai_risk_questions"}


def _web(data: Path) -> Iterator[dict]:
    demo = data / "llama-factory-demo"
    for index, line in enumerate((demo / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()):
        yield {"id": f"c4/{index}", "text": json.loads(line)["text"], "label": 0, "group": "web"}
    articles = [a for a in (demo / "wiki_demo.txt").read_text(encoding="utf-8").splitlines() if a.strip()]
    for index, article in enumerate(articles):
        yield {"id": f"wikipedia/{index}", "text": article, "label": 0, "group": "web"}
    for path in sorted((data / "dolma-test-data" / "multiple_files").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            yield {"id": f"cc/{row['id']}", "text": row["text"], "label": 0, "group": "web"}


def build_labelled_set(data: Path, out_dir: Path, questions_per_file: int = 30, seed: int = 0) -> dict[str, int]:
    """Write `out_dir/{train,test,all}.jsonl`; returns the row count per split and group."""
    missing = [p for p in ("ai-safety-atlas", "anthropics-evals", "llama-factory-demo", "dolma-test-data")
               if not (data / p).is_dir()]
    if missing:
        raise FileNotFoundError(f"{data}: missing {', '.join(missing)} (expected the layout of ../shared/data)")
    rows = [*_atlas(data), *_questions(data, questions_per_file, random.Random(seed)), *_web(data)]
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with (out_dir / "train.jsonl").open("w") as train, (out_dir / "test.jsonl").open("w") as test, (
        out_dir / "all.jsonl"
    ).open("w") as everything:
        for row in rows:
            split = "test" if in_held_out_share(row["id"]) else "train"
            (test if split == "test" else train).write(json.dumps(row) + "\n")
            everything.write(json.dumps(row) + "\n")
            counts[f"{split}/{row['group']}"] = counts.get(f"{split}/{row['group']}", 0) + 1
    return dict(sorted(counts.items()))


def read_labels(path: Path) -> list[dict]:
    """Rows of a labelled jsonl file: each needs `text` and `label` (0 or 1); `group` is optional."""
    rows = []
    for number, row in iter_json_lines(path):
        if not isinstance(row, dict) or "text" not in row or row.get("label") not in (0, 1):
            raise ValueError(f"{path}:{number}: expected an object with `text` and `label` 0 or 1")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no labelled rows")
    return rows
