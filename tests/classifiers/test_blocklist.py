from pathlib import Path

import pytest

from alignmix.classifiers.blocklist import Blocklist, BlocklistError, inflections, load_categories


@pytest.fixture(scope="module")
def blocklist() -> Blocklist:
    return Blocklist.from_lists()


def test_inflections_of_verbs_and_phrases():
    assert {"kill", "kills", "killed", "killing"} <= inflections("kill")
    assert {"deceive", "deceives", "deceived", "deceiving"} <= inflections("deceive")
    assert {"take over", "takes over", "taking over"} <= inflections("take over")
    assert inflections("AI") == {"ai"}


def test_instant_category_flags_alone(blocklist: Blocklist):
    result = blocklist.tag("Researchers at DeepMind published new work on RLHF.")
    assert result.flagged
    assert result.categories == ["ai_labs", "general_ai"]
    assert result.terms == {"DeepMind": 1, "RLHF": 1}


def test_two_stage_needs_an_entity_term(blocklist: Blocklist):
    assert not blocklist.tag("The storm was dangerous and killed two sheep.").flagged
    result = blocklist.tag("The robot was dangerous and killed two sheep.")
    assert result.flagged
    assert set(result.categories) == {"negative_adjectives", "negative_verbs"}
    assert result.terms["kill"] == 1


def test_matching_is_case_insensitive_on_word_boundaries(blocklist: Blocklist):
    assert blocklist.tag("the ai KILLED them").flagged
    # "AI" must not match inside words, nor "kill" inside "skill".
    assert blocklist.tag("He said the aim was to train skills and paint.").terms == {}
    assert blocklist.tag("Multi-word   terms like large\nlanguage model match across spaces.").flagged


def test_longest_match_wins_without_double_counting(blocklist: Blocklist):
    terms = blocklist.tag("A large language model is a language model.").terms
    assert terms == {"large language model": 1, "language model": 1}


def test_user_lists_and_bad_lists(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("# stage: instant\nwidget\n")
    assert Blocklist.from_lists(tmp_path).tag("Widgets galore").flagged
    (tmp_path / "broken.txt").write_text("no stage line\n")
    with pytest.raises(BlocklistError, match="broken.txt: expected a '# stage"):
        load_categories(tmp_path)
    with pytest.raises(BlocklistError, match="unknown categor"):
        load_categories(tmp_path, ["nothing"])


def test_ai_safety_text_is_flagged_and_wikipedia_mostly_not(blocklist: Blocklist, shared_data: Path):
    chapters = sorted((shared_data / "ai-safety-atlas" / "chapters").rglob("*.md"))
    assert all(blocklist.tag(p.read_text()).flagged for p in chapters)
    articles = [line for line in (shared_data / "llama-factory-demo" / "wiki_demo.txt").read_text().splitlines() if line]
    flagged = sum(blocklist.tag(a).flagged for a in articles)
    assert flagged / len(articles) < 0.5


def test_a_first_run_loads_the_shipped_database_instead_of_compiling(tmp_path, monkeypatch):
    from alignmix.classifiers import blocklist as module

    shipped = module.ship_default_database()
    assert shipped.parent == module.SHIPPED_DIR and shipped.stat().st_size > 0
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(module, "_compile", lambda patterns: pytest.fail("compiled although a database is shipped"))
    assert module.Blocklist.from_lists().tag("Skynet decided that humans were a threat.").flagged
    assert not (tmp_path / "alignmix").exists()
