"""The mixture selection language (tags, categories, terms, score, any metadata field, any_of) and the share kinds
(`natural`, `temperature`), on tagged shards the tests write; refusals before any work."""

import gzip
import json
from pathlib import Path

import pytest

from alignmix.corpus.mix import build_stage_mixture
from alignmix.corpus.plan import PlanError, apportion, plan_stage
from alignmix.corpus.select import compile_selector, label
from alignmix.corpus.tokenizer import train_bpe
from alignmix.recipe import RecipeError, Selector, TrainingStage, parse_recipe
from tests.test_recipe import tiny_data


def _doc(i: int, categories: list[str], stance: str | None = None, score: float | None = None, **fields) -> dict:
    tags = {"flagged": bool(categories), "categories": categories, "terms": {c.split("_")[0]: 1 for c in categories},
            "score": score, "stance": stance}
    words = " ".join(f"word{(i * 7 + k) % 50}" for k in range(40))
    return {"id": f"d{i}", "text": f"Document {i}. {words}", "metadata": {"ai_discourse": tags, **fields}}


DOCS = [
    _doc(0, [], quality=0.9, domain="news"),
    _doc(1, ["general_ai"], stance="aligned", score=0.95, quality=0.4, domain="blog"),
    _doc(2, ["general_ai", "negative_verbs"], stance="misaligned", score=0.97, quality=0.8, domain="news"),
    _doc(3, ["existential_risk"], stance="misaligned", score=0.5, quality=0.7, domain="forum"),
    _doc(4, ["scifi_ai"], stance="neutral", score=0.92, quality=0.95, domain="news", nested={"lang": "en"}),
    _doc(5, [], quality=0.2, domain="blog", nested={"lang": "de"}),
]


def _select(**kwargs) -> list[str]:
    keep = compile_selector(Selector(**kwargs))
    return [d["id"] for d in DOCS if keep(d["metadata"])]


def test_each_condition_selects_what_it_says():
    assert _select(flagged=True) == ["d1", "d2", "d3", "d4"]
    assert _select(stance=["aligned", "neutral"]) == ["d1", "d4"]
    negative = ["negative_verbs", "negative_adjectives", "negative_nouns", "existential_risk"]
    assert _select(categories={"none": negative}) == ["d0", "d1", "d4", "d5"]
    assert _select(categories={"all": ["general_ai", "negative_verbs"]}) == ["d2"]
    assert _select(categories={"any": ["scifi_ai", "existential_risk"]}) == ["d3", "d4"]
    assert _select(terms={"any": ["general"]}) == ["d1", "d2"]
    assert _select(score={"min": 0.9}) == ["d1", "d2", "d4"]  # no score: not selected
    assert _select(fields={"quality": {"min": 0.75}}) == ["d0", "d2", "d4"]
    assert _select(fields={"domain": ["news", "forum"]}) == ["d0", "d2", "d3", "d4"]
    assert _select(fields={"domain": "blog"}) == ["d1", "d5"]
    assert _select(fields={"nested.lang": "en"}) == ["d4"]
    assert _select(fields={"nested": {"exists": False}}) == ["d0", "d1", "d2", "d3"]


def test_all_conditions_hold_and_one_alternative_of_any_of():
    selector = Selector(flagged=True, any_of=[{"stance": "aligned"}, {"fields": {"quality": {"min": 0.9}}}])
    assert [d["id"] for d in DOCS if compile_selector(selector)(d["metadata"])] == ["d1", "d4"]
    assert label(Selector(flagged=False)) == "flagged=False"  # the simple selections keep their old labels
    assert label(selector) == ('{"any_of":[{"stance":"aligned"},{"fields":{"quality":{"min":0.9}}}],'
                               '"flagged":true}')


def _shards(tmp_path: Path, docs: list[dict]) -> list[Path]:
    path = tmp_path / "web" / "00000.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as handle:
        handle.writelines(json.dumps(d) + "\n" for d in docs)
    return [path]


def _stage(mixture: list[dict], tokens: int = 1_000) -> TrainingStage:
    return TrainingStage.model_validate({"name": "pretrain", "tokens": tokens, "seq_len": 16, "mixture": mixture})


def test_the_mixture_draws_only_selected_documents_and_records_the_selection(tmp_path: Path):
    docs = [_doc(i, ["general_ai", "negative_verbs"] if i % 3 == 0 else ["general_ai"] if i % 3 == 1 else [],
                 quality=(i % 10) / 10) for i in range(60)]
    shards = _shards(tmp_path, docs)
    train_bpe((d["text"] for d in docs), 300, tmp_path / "tok")
    select = {"categories": {"none": ["negative_verbs"]}, "fields": {"quality": {"min": 0.3}}}
    stage = _stage([{"source": "web", "select": select, "share": "rest", "max_repetitions": 5}])
    manifest = build_stage_mixture(stage, {"web": shards}, tmp_path / "tok", tmp_path / "mix", seed=3)
    (entry,) = manifest["sources"]
    wanted = [d for d in docs if "negative_verbs" not in d["metadata"]["ai_discourse"]["categories"]
              and d["metadata"]["quality"] >= 0.3]
    assert entry["documents_available"] == len(wanted) and entry["selection"] == select
    assert entry["realised_tokens"] == 1_000
    again = build_stage_mixture(stage, {"web": shards}, tmp_path / "tok", tmp_path / "again", seed=3)
    assert again["chunks"] == manifest["chunks"]  # byte-identical


def test_a_field_no_document_has_is_refused_naming_the_key_and_what_exists(tmp_path: Path):
    shards = _shards(tmp_path, DOCS)
    train_bpe((d["text"] for d in DOCS), 300, tmp_path / "tok")
    stage = _stage([{"source": "web", "select": {"fields": {"qualty": {"min": 0.5}}}, "share": "rest"}])
    with pytest.raises(PlanError, match=r"key 'stages.0.mixture.0.select.fields.qualty': no document of this source"
                                        r" has metadata field 'qualty'; fields that exist: .*quality"):
        build_stage_mixture(stage, {"web": shards}, tmp_path / "tok", tmp_path / "mix", seed=3)


def test_an_unknown_category_is_refused_before_any_work():
    from alignmix.graph import check_selections

    data = tiny_data()
    data["stages"][0]["mixture"][0]["select"] = {"categories": {"none": ["negative_verb"]}}
    with pytest.raises(RecipeError, match=r"key 'stages.0.mixture.0.select.categories.none.0': unknown category"
                                          r" 'negative_verb'; the tagging blocklist has: .*negative_verbs"):
        check_selections(parse_recipe(data))


def test_natural_shares_split_what_is_left_by_available_tokens_and_temperature_flattens_them():
    mixture = [{"source": "a", "share": 0.2}, {"source": "b", "share": "natural"}, {"source": "c", "share": "natural"}]
    plan = plan_stage(_stage(mixture, 10_000), {"a": 50_000, "b": 30_000, "c": 10_000})
    assert [s.tokens for s in plan.sources] == [2_000, 6_000, 2_000]
    flat = [{**e, "temperature": 2.0} if e["share"] == "natural" else e for e in mixture]
    plan = plan_stage(_stage(flat, 10_000), {"a": 50_000, "b": 30_000, "c": 10_000})
    assert [s.tokens for s in plan.sources][1:] == apportion(8_000, [30_000 ** 0.5, 10_000 ** 0.5])
    assert sum(s.tokens for s in plan.sources) == 10_000
    unknown = plan_stage(_stage(mixture, 10_000))  # no statistics: the natural split waits for tagging
    assert [s.tokens for s in unknown.sources] == [2_000, None, None]
    with pytest.raises(PlanError, match=r"source 'b': 6,000 planned tokens need 2.00 repetitions of its 3,000"):
        plan_stage(_stage(mixture, 10_000), {"a": 50_000, "b": 3_000, "c": 1_000})


def test_natural_and_rest_and_mixed_temperatures_are_refused():
    with pytest.raises(ValueError, match="either one `share: rest` entry or `share: natural` entries"):
        _stage([{"source": "a", "share": "rest"}, {"source": "b", "share": "natural"}])
    with pytest.raises(ValueError, match="give them the same `temperature`"):
        _stage([{"source": "a", "share": "natural", "temperature": 2}, {"source": "b", "share": "natural"}])
    with pytest.raises(ValueError, match="`temperature` applies to `share: natural` entries"):
        _stage([{"source": "a", "share": "rest", "temperature": 2}])


SELECTIONS = [
    {}, {"flagged": True}, {"flagged": False}, {"stance": ["aligned", "neutral"]}, {"stance": "misaligned"},
    {"categories": {"none": ["negative_verbs", "existential_risk"]}},
    {"categories": {"all": ["general_ai", "negative_verbs"]}}, {"categories": {"any": ["scifi_ai", "existential_risk"]}},
    {"terms": {"any": ["general"]}}, {"terms": {"none": ["general", "unseen"]}}, {"score": {"min": 0.9}},
    {"score": {"min": 0.5, "max": 0.95}}, {"fields": {"quality": {"min": 0.75}}},
    {"fields": {"domain": ["news", "forum"]}}, {"fields": {"domain": "blog"}}, {"fields": {"domain": 3}},
    {"fields": {"nested.lang": "en"}}, {"fields": {"nested": {"exists": False}}},
    {"fields": {"absent.path": {"exists": True}}}, {"fields": {"domain": {"min": 1}}},
    {"flagged": True, "any_of": [{"stance": "aligned"}, {"fields": {"quality": {"min": 0.9}}}]},
]


def test_counting_selections_with_polars_agrees_with_the_mixer_predicate(tmp_path: Path):
    from alignmix.corpus.selection_counts import count_selections

    selectors = [Selector(**s) for s in SELECTIONS]
    counts = count_selections(_shards(tmp_path, DOCS), selectors)
    for selection, selector, count in zip(SELECTIONS, selectors, counts):
        kept = [d for d in DOCS if compile_selector(selector)(d["metadata"])]
        assert count.documents == len(kept), selection
        assert count.characters == sum(len(d["text"]) for d in kept), selection
    assert count_selections([], selectors[:1])[0].documents == 0


def test_plan_counts_available_tokens_from_a_runs_tagged_shards(tmp_path: Path):
    from alignmix.corpus.plan import PlanError, counted_available

    _shards(tmp_path / "run" / "tag" / "web", DOCS)
    (tmp_path / "run" / "tag" / "web" / "web").rename(tmp_path / "run" / "tag" / "web" / "data")
    recipe = parse_recipe(tiny_data())  # `web` is a corpus source: its shards are RUN/tag/web/data/
    stage = _stage([{"source": "web", "select": {"flagged": True}, "share": "natural", "max_repetitions": 100},
                    {"source": "web", "select": {"flagged": False}, "share": "natural", "max_repetitions": 100}],
                   tokens=2_000)
    available = counted_available(recipe, stage, tmp_path / "run", chars_per_token=2.0)
    flagged = sum(len(d["text"]) for d in DOCS if d["metadata"]["ai_discourse"]["flagged"])
    assert available == {"web[flagged=True]": round(flagged / 2), "web[flagged=False]": round((sum(
        len(d["text"]) for d in DOCS) - flagged) / 2)}
    plan = plan_stage(stage, available)
    assert sum(s.tokens for s in plan.sources) == 2_000 and plan.sources[0].available_tokens == available[
        "web[flagged=True]"]
    with pytest.raises(PlanError, match="no shards in"):
        counted_available(recipe, stage, tmp_path / "elsewhere")


def test_the_mixers_column_selection_keeps_what_the_predicate_keeps(tmp_path: Path):
    """Every condition kind, over a token store's document table, against the Python predicate (the oracle),
    with a term whose name holds dots."""
    from alignmix.corpus.mix import select_documents
    from alignmix.corpus.tokens import build_token_store

    dotted = _doc(6, ["general_ai"], stance="aligned", score=0.99, quality=0.5, domain="news")
    dotted["metadata"]["ai_discourse"]["terms"] = {"A.I.": 2, "FAR.AI": 1, "general": 1}
    docs = [*DOCS, dotted]
    train_bpe((d["text"] for d in docs), 300, tmp_path / "tok")
    store = build_token_store(_shards(tmp_path, docs), tmp_path / "tok", tmp_path / "store")
    ids = store.table().collect()["id"].to_list()
    for selection in [*SELECTIONS, {"terms": {"any": ["A.I."]}}, {"terms": {"all": ["FAR.AI", "general"]}},
                      {"terms": {"none": ["A.I.", "negative"]}}]:
        if any(path.startswith("absent") for path in selection.get("fields", {})):
            continue  # refused: no document has the field
        kept = select_documents(store, Selector(**selection))
        expected = [d["id"] for d in docs if compile_selector(Selector(**selection))(d["metadata"])]
        assert [ids[int(i)] for i in kept.document] == expected, selection


def test_a_tag_no_document_fills_is_stored_and_selects_nothing(tmp_path: Path):
    """Shards where every `terms` mapping is empty and every score null (an untagged-looking source) tokenize
    into a store (an empty mapping holds no column) and select as the predicate does."""
    from alignmix.corpus.mix import select_documents
    from alignmix.corpus.tokens import build_token_store

    docs = [{"id": f"e{i}", "text": f"Plain text {i}.", "metadata": {"ai_discourse": {
        "flagged": False, "categories": [], "terms": {}, "score": None, "stance": None}}} for i in range(4)]
    train_bpe((d["text"] for d in docs), 300, tmp_path / "tok")
    store = build_token_store(_shards(tmp_path, docs), tmp_path / "tok", tmp_path / "store")
    for selection, kept in (({"flagged": False}, 4), ({"terms": {"any": ["general"]}}, 0),
                            ({"categories": {"none": ["general_ai"]}}, 4), ({"score": {"min": 0.5}}, 0)):
        assert len(select_documents(store, Selector(**selection)).document) == kept, selection
