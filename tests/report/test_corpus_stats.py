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


def tagged(text: str, terms: dict[str, int], stance: str | None = None, source: str | None = None,
           flagged: bool | None = None) -> dict:
    flagged = bool(terms) if flagged is None else flagged
    tags = {"flagged": flagged, "categories": ["scifi_ai"] if flagged else [], "terms": terms, "score": None,
            "stance": stance}
    return {"id": text, "text": text, "metadata": {"ai_discourse": tags} | ({"source": source} if source else {})}


def test_statistics_count_every_shards_terms_stances_and_sources(tmp_path: Path):
    write_shard(tmp_path / "tag" / "web" / "00000.jsonl.gz",
                [tagged("plain text", {}), tagged("Skynet wins", {"Skynet": 2, "robot": 1}, "misaligned"),
                 tagged("attack and kill the capture", {"attack": 5}, flagged=False)])
    write_shard(tmp_path / "tag" / "web" / "00001.jsonl.gz",
                [tagged("HAL \"9000\"", {'HAL "9000"': 1, "café": 3}, "aligned")])
    write_shard(tmp_path / "tag" / "books" / "00000.jsonl.gz", [tagged("a robot", {"robot": 4}, source="novels")])
    write_shard(tmp_path / "corpus" / "web.jsonl.gz", [{"id": "raw", "text": "not tagged", "metadata": {}}])

    sources = collect([tmp_path])["sources"]

    assert set(sources) == {"web", "novels"}
    web = sources["web"]
    assert web["documents"] == 4 and web["flagged"] == 2
    assert web["characters"] == len("plain textSkynet winsattack and kill the captureHAL \"9000\"")
    # the terms of flagged documents only: "attack" matched in a document the filter did not flag
    assert web["top_terms"] == {"café": 3, "Skynet": 2, 'HAL "9000"': 1, "robot": 1}
    assert web["top_terms_documents"] == {"café": 1, "Skynet": 1, 'HAL "9000"': 1, "robot": 1}
    assert web["flagged_excerpts"] == {"scifi_ai": ["Skynet wins", 'HAL "9000"']}
    assert web["stance"] == {"aligned": 1, "misaligned": 1, "none": 2}
    assert web["categories"]["scifi_ai"]["documents"] == 2
    assert web["length_unit"] == "characters" and sum(web["length_histogram"].values()) == 4
    assert sources["novels"]["top_terms"] == {"robot": 4}


def test_an_excerpt_is_the_text_around_the_first_matched_term():
    from alignmix.report.corpus_stats import excerpt

    text = "x" * 300 + " The android   said hello. " + "y" * 300
    shown = excerpt(text, ["robot", "Android"])
    assert shown.startswith("…") and shown.endswith("…") and "The android said hello." in shown
    assert excerpt("short text", []) == "short text"


def test_the_stats_page_says_what_its_term_table_counts_and_shows_flagged_excerpts(tmp_path: Path):
    from alignmix.report.html import render_stats_page

    write_shard(tmp_path / "tag" / "web" / "00000.jsonl.gz",
                [tagged("An android asked to stay on.", {"android": 1}), tagged("attack", {"attack": 3}, flagged=False)])
    page = render_stats_page(collect([tmp_path]), tmp_path / "stats.html").read_text()
    assert "Top matched terms in flagged documents" in page and "counted in the 1 flagged documents of 2" in page
    assert "<td>android</td>" in page and "<td>attack</td>" not in page
    assert "<h4>scifi_ai</h4><ul class='excerpts'><li>An android asked to stay on.</li></ul>" in page
