import pytest

from alignmix.corpus.plan import PlanError, apportion, plan_stage
from alignmix.recipe import TrainingStage


def stage(tokens: int, mixture: list[dict]) -> TrainingStage:
    return TrainingStage(name="pretrain", tokens=tokens, seq_len=128, mixture=mixture)


def test_apportion_is_exact():
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(apportion(1_000_003, [0.093, 0.9, 0.007])) == 1_000_003


def test_rest_takes_what_is_left():
    plan = plan_stage(stage(1000, [{"source": "web", "share": "rest"}, {"source": "syn", "share": 0.01}]))
    assert [s.tokens for s in plan.sources] == [990, 10]
    assert plan.sources[1].share == pytest.approx(0.01)


def test_absolute_tokens_and_shares_sum_to_the_stage():
    plan = plan_stage(stage(1000, [{"source": "a", "tokens": 300}, {"source": "b", "share": 0.7}]))
    assert sum(s.tokens for s in plan.sources) == 1000


def test_uncovered_stage_is_refused():
    with pytest.raises(PlanError, match="covers 0.5000"):
        plan_stage(stage(1000, [{"source": "a", "share": 0.5}]))


def test_too_many_repetitions_are_refused_with_the_numbers():
    mixture = [{"source": "web", "share": "rest"}, {"source": "syn", "share": 0.5, "max_repetitions": 100}]
    with pytest.raises(PlanError, match=r"'syn': 5,000,000 planned tokens need 4,166.67 repetitions .* 1,200"):
        plan_stage(stage(10_000_000, mixture), {"web": 10**8, "syn": 1200})


def test_empty_source_is_refused():
    with pytest.raises(PlanError, match="'web\\[flagged=False\\]': no documents"):
        plan_stage(stage(1000, [{"source": "web", "share": "rest", "select": {"flagged": False}}]), {"web[flagged=False]": 0})


def test_a_zero_dose_of_an_empty_selection_is_planned():
    """docs/sweeps.md allows a zero dose: an entry of share 0 needs no documents, even where its selection keeps none."""
    mixture = [{"source": "web", "share": "rest"}, {"source": "web", "select": {"flagged": True}, "share": 0}]
    plan = plan_stage(stage(1000, mixture), {"web": 10_000, "web[flagged=True]": 0})
    assert [(s.tokens, s.repetitions) for s in plan.sources] == [(1000, 0.1), (0, 0.0)]


def test_plan_run_counts_exact_tokens_from_the_store_and_else_measures_the_tokenizer(tagged, tmp_path):
    """`plan --run`: a source whose tokens stage ran is counted exactly; before that, characters per token are
    measured with the run's tokenizer (not assumed to be 4.0), close to the exact count."""
    import shutil
    from pathlib import Path

    from alignmix.corpus.plan import CHARS_PER_TOKEN, counted_available
    from alignmix.corpus.tokenizer import train_bpe
    from alignmix.corpus.tokens import build_token_store
    from alignmix.jsonl import read_jsonl_gz
    from alignmix.recipe import load_recipe

    repo = Path(__file__).resolve().parents[2]
    recipe = load_recipe(repo / "recipes" / "tiny.yaml")
    run = tmp_path / "run"
    shutil.copytree(tagged / "tag" / "data", run / "tag" / "web" / "data")
    shards = sorted((run / "tag" / "web" / "data").glob("*.jsonl.gz"))
    train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, run / "tokenizer")
    web = stage(1000, [{"source": "web", "select": {"flagged": False}, "share": "rest"}])
    (estimated,) = counted_available(recipe, web, run).values()
    (rule_of_thumb,) = counted_available(recipe, web, run, CHARS_PER_TOKEN).values()
    store = build_token_store(shards, run / "tokenizer", run / "tokens" / "web")
    (exact,) = counted_available(recipe, web, run).values()
    table = store.table().collect()
    assert exact == table.filter(~table["metadata.ai_discourse.flagged"])["tokens"].sum()
    assert abs(estimated / exact - 1) < 0.1 < abs(rule_of_thumb / exact - 1)
