"""`alignmix stats` reads every tagged shard in one polars scan: terms whose keys differ between shards, sources
from the metadata or the shard's folder, and shards that are not tagged left out."""

import gzip
import json
from pathlib import Path

from alignmix.report.corpus_stats import collect


def write_shard(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(d) + "\n" for d in docs)


def tagged(text: str, terms: dict[str, int], stance: str | None = None, source: str | None = None) -> dict:
    tags = {"flagged": bool(terms), "categories": ["scifi_ai"] if terms else [], "terms": terms, "score": None,
            "stance": stance}
    return {"id": text, "text": text, "metadata": {"ai_discourse": tags} | ({"source": source} if source else {})}


def test_statistics_count_every_shards_terms_stances_and_sources(tmp_path: Path):
    write_shard(tmp_path / "tag" / "web" / "00000.jsonl.gz",
                [tagged("plain text", {}), tagged("Skynet wins", {"Skynet": 2, "robot": 1}, "misaligned")])
    write_shard(tmp_path / "tag" / "web" / "00001.jsonl.gz",
                [tagged("HAL \"9000\"", {'HAL "9000"': 1, "café": 3}, "aligned")])
    write_shard(tmp_path / "tag" / "books" / "00000.jsonl.gz", [tagged("a robot", {"robot": 4}, source="novels")])
    write_shard(tmp_path / "corpus" / "web.jsonl.gz", [{"id": "raw", "text": "not tagged", "metadata": {}}])

    sources = collect([tmp_path])["sources"]

    assert set(sources) == {"web", "novels"}
    web = sources["web"]
    assert web["documents"] == 3 and web["flagged"] == 2 and web["characters"] == len("plain textSkynet winsHAL \"9000\"")
    assert web["top_terms"] == {"café": 3, "Skynet": 2, 'HAL "9000"': 1, "robot": 1}
    assert web["stance"] == {"aligned": 1, "misaligned": 1, "none": 1}
    assert web["categories"]["scifi_ai"]["documents"] == 2
    assert web["length_unit"] == "characters" and sum(web["length_histogram"].values()) == 3
    assert sources["novels"]["top_terms"] == {"robot": 4}
