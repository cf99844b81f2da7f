"""Share schedules within a stage: validated per point, planned exactly per window, refused where a window cannot
be met, and laid out in the mixture index window by window, shuffled (seeded) within each window."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from alignmix.corpus.plan import PlanError, plan_stage
from alignmix.recipe import RecipeError, TrainingStage, load_recipe

LAST_TENTH = {"schedule": [[0, 0], [0.9, 0], [0.9, 0.5], [1, 0.5]]}
STREAM = ["mixing.delivery=stream"]


def stage(tokens: int, mixture: list[dict], seq_len: int = 128) -> TrainingStage:
    return TrainingStage(name="pretrain", tokens=tokens, seq_len=seq_len, mixture=mixture)


@pytest.mark.parametrize("tokens", [300_000, 40_000, 12_345, 1_000_003])
def test_windows_are_exact_and_sum_to_each_entrys_total(tokens: int):
    """Every window's entries fill it exactly, an entry's windows sum to its total, a window before the step gets
    none of the scheduled entry, and the other entries split what is left in their proportions."""
    ramp = {"schedule": [[0, 0], [1 / 3, 0.07], [1, 0.01]]}
    plan = plan_stage(stage(tokens, [{"source": "web", "share": "rest"}, {"source": "syn", "share": LAST_TENTH},
                                     {"source": "books", "share": 0.3}, {"source": "ramp", "share": ramp}]))
    assert len(plan.windows) == 100 and plan.windows[0].start == 0 and plan.windows[-1].end == tokens
    for window in plan.windows:
        assert sum(window.tokens) == window.end - window.start and min(window.tokens) >= 0
    for i, source in enumerate(plan.sources):
        assert sum(w.tokens[i] for w in plan.windows) == source.tokens
    assert sum(s.tokens for s in plan.sources) == tokens
    before, after = plan.windows[:90], plan.windows[90:]
    assert all(w.tokens[1] == 0 for w in before) and all(w.tokens[1] > 0 for w in after)
    ramp_tokens = [w.tokens[3] for w in plan.windows]  # up from 0 to 7% at a third, then down to 1%
    assert ramp_tokens[0] < ramp_tokens[16] < ramp_tokens[32] and ramp_tokens[34] > ramp_tokens[66] > ramp_tokens[99]
    for w in plan.windows:  # books keep 0.3 of what the schedules leave, within a token
        left = (w.end - w.start) - w.tokens[1] - w.tokens[3]
        assert abs(w.tokens[2] - 0.3 * left) < 1


@pytest.mark.parametrize("start, share", [(0.9, 0.5), (0.75, 0.2), (0.5, 0.1), (0.0, 0.05)])
def test_the_same_dose_in_any_window_is_exact(start: float, share: float):
    """The insertion-window sweep's four schedules give the same 15,000 tokens of 300,000 exactly."""
    points = [[0, 0], [start, 0], [start, share], [1, share]] if start else [[0, share], [1, share]]
    schedule = {"schedule": points}
    plan = plan_stage(stage(300_000, [{"source": "web", "share": "rest"}, {"source": "syn", "share": schedule}]))
    assert [s.tokens for s in plan.sources] == [285_000, 15_000]
    first = round(start * 100)
    assert {w.tokens[1] for w in plan.windows[first:]} == {round(3_000 * share)}
    assert sum(w.tokens[1] for w in plan.windows[:first]) == 0


@pytest.mark.parametrize("share, key, message", [
    ({"schedule": [[0, 0], [0.9, 0], [0.5, 0.05], [1, 0.05]]}, "share.schedule.2",
     "fractions must not decrease: 0.5 comes after 0.9"),
    ({"schedule": [[0, 0], [0.9, 1.5], [1, 0.05]]}, "share.schedule.1",
     "expected a [fraction, share] pair of numbers in [0, 1], got [0.9, 1.5]"),
    ({"schedule": [[0.1, 0], [1, 0.05]]}, "share.schedule", "the first at fraction 0, the last at 1"),
    ({"schedule": [[0, 0], [0.5, 0], [0.5, 0.1], [0.5, 0.2], [1, 0.2]]}, "share.schedule.3",
     "at most two points at fraction 0.5 (a step)"),
    ({"schedul": [[0, 0], [1, 0]]}, "share", "expected {schedule: [[fraction, share], ...]}"),
])
def test_a_bad_schedule_is_one_error_naming_its_point(share: dict, key: str, message: str):
    with pytest.raises(RecipeError) as error:
        load_recipe(REPO / "recipes" / "tiny.yaml", [*STREAM, f"stages.0.mixture.1.share={json.dumps(share)}"])
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == 1 and f"key 'stages.0.mixture.1.{key}'" in lines[0] and message in lines[0], lines


def test_schedules_with_chunk_delivery_are_refused():
    with pytest.raises(RecipeError, match=r"key 'stages.0.mixture.1.share': schedules need mixing.delivery: stream"):
        load_recipe(REPO / "recipes" / "tiny.yaml", [f"stages.0.mixture.1.share={json.dumps(LAST_TENTH)}"])
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", [*STREAM, f"stages.0.mixture.1.share={json.dumps(LAST_TENTH)}"])
    assert recipe.stages[0].mixture[1].model_dump(mode="json")["share"] == {
        "schedule": [[0.0, 0.0], [0.9, 0.0], [0.9, 0.5], [1.0, 0.5]]}


def test_an_infeasible_window_is_refused_naming_the_window_and_the_numbers():
    late = {"schedule": [[0, 0.1], [0.95, 0.1], [0.95, 0.6], [1, 0.6]]}
    with pytest.raises(PlanError, match=r"stage 'pretrain', window 95 \(tokens 285,000 to 288,000, 95% to 96% of the"
                                        r" stage\): the scheduled shares add up to 1.1000 \(syn 0.5000, late 0.6000\);"
                                        " they must not exceed 1"):
        plan_stage(stage(300_000, [{"source": "web", "share": "rest"}, {"source": "syn", "share": LAST_TENTH},
                                   {"source": "late", "share": late}]))
    with pytest.raises(PlanError, match=r"window 0 .*: the scheduled shares add up to 0.0000 and no other entry"):
        plan_stage(stage(300_000, [{"source": "syn", "share": LAST_TENTH}]))
    with pytest.raises(PlanError, match=r"stage 'pretrain': the entries without a schedule take 1.0526 of the"
                                        r" 285,000 tokens the schedules leave \(books 300,000 tokens\)"):
        plan_stage(stage(300_000, [{"source": "web", "share": "rest"}, {"source": "syn", "share": LAST_TENTH},
                                   {"source": "books", "tokens": 300_000}]))
    with pytest.raises(PlanError, match=r"'syn': 15,000 planned tokens need 3.75 repetitions .* max_repetitions is 1"):
        plan_stage(stage(300_000, [{"source": "web", "share": "rest"}, {"source": "syn", "share": LAST_TENTH}]),
                   {"web": 10**6, "syn": 4_000})


def test_plan_prints_the_windows_and_their_json():
    sets = ["--set", STREAM[0], "--set", f"stages.0.mixture.1.share={json.dumps(LAST_TENTH)}"]
    shown = subprocess.run([sys.executable, "-m", "alignmix", "plan", str(REPO / "recipes" / "tiny.yaml"), *sets],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    rows = [" ".join(line.replace("│", " ").split()) for line in shown.stdout.splitlines()]
    assert "0-89 0%-90% 270,000 270,000 (100.00%) 0 (0.00%)" in rows
    assert "90-99 90%-100% 30,000 15,000 (50.00%) 15,000 (50.00%)" in rows
    as_json = subprocess.run([sys.executable, "-m", "alignmix", "plan", str(REPO / "recipes" / "tiny.yaml"), *sets,
                              "--json"], capture_output=True, text=True)
    (pretrain,) = json.loads(as_json.stdout)["stages"]
    assert pretrain["windows"][89] == {"start": 267_000, "end": 270_000, "tokens": [3_000, 0]}
    assert pretrain["windows"][90] == {"start": 270_000, "end": 273_000, "tokens": [1_500, 1_500]}


def test_the_draw_fills_each_window_exactly_cutting_only_its_last_piece():
    from alignmix.corpus.mix import draw_windows

    lengths = np.random.default_rng(0).integers(1, 100, 500).astype(np.uint32)
    budgets = [0, 700, 0, 30_000, 5, 26_000, 0]  # 61,705 tokens: two passes and a part of a third
    units, takes, uses, counts = draw_windows(lengths, budgets, np.random.default_rng(1))
    assert sum(counts) == len(units) and counts[0] == counts[2] == counts[-1] == 0
    ends = np.cumsum(counts)
    for budget, low, high in zip(budgets, ends - counts, ends):
        assert int(takes[low:high].sum()) == budget
        last = max(high - 1, low)  # only a window's last piece is cut
        assert (takes[low:last] == lengths[units[low:last]]).all()
    assert (np.bincount(units, minlength=500) == uses).all() and uses.max() <= 3


def _mix(tagged: Path, tmp_path: Path, name: str, seed: int) -> Path:
    from alignmix.corpus.mix import build_stage_mixture
    from alignmix.corpus.tokenizer import train_bpe
    from alignmix.jsonl import read_jsonl_gz

    shards = sorted((tagged / "tag" / "data").glob("*.jsonl.gz"))
    if not (tmp_path / "tok").is_dir():
        train_bpe((r["text"] for r in read_jsonl_gz(shards)), 300, tmp_path / "tok")
    mixture = [{"source": "web", "select": {"flagged": False}, "share": "rest", "max_repetitions": 3},
               {"source": "web", "select": {"flagged": True}, "share": LAST_TENTH, "max_repetitions": 5}]
    build_stage_mixture(stage(60_000, mixture, seq_len=64), {"web": shards}, tmp_path / "tok", tmp_path / name, seed)
    return tmp_path / name


def test_the_index_lays_each_window_out_as_planned_shuffled_within_it(tagged: Path, tmp_path: Path):
    """Counted from the index columns alone: no piece crosses a window edge, each window holds exactly the plan's
    tokens of each entry, and its pieces are shuffled together (seeded: the same seed gives the same index, another
    seed another order of the same windows)."""
    from alignmix.outputs import MixtureIndex

    folder = _mix(tagged, tmp_path, "a", seed=5)
    windows = json.loads((folder / "mixture_manifest.json").read_text())["windows"]
    edges = np.array([w["start"] for w in windows] + [windows[-1]["end"]])
    index = MixtureIndex.of(folder)
    entry, take = np.asarray(index.column("entry")), np.asarray(index.column("take")).astype(np.int64)
    ends = np.cumsum(take)
    window = np.searchsorted(edges, ends - take, side="right") - 1
    assert (ends <= edges[window + 1]).all()  # no piece crosses an edge
    counted = np.zeros((100, 2), np.int64)
    np.add.at(counted, (window, entry), take)
    assert counted.tolist() == [w["tokens"] for w in windows]
    assert counted[:90, 1].sum() == 0 and counted[90:, 1].sum() == 3_000
    mixed = entry[window == 95]
    assert 0 < mixed.sum() < len(mixed) and not (np.diff(mixed.astype(int)) >= 0).all()  # not entry by entry
    assert (index.tokens_by_window(edges.tolist()) == counted).all()

    same, other = MixtureIndex.of(_mix(tagged, tmp_path, "b", seed=5)), MixtureIndex.of(_mix(tagged, tmp_path, "c", 6))
    assert all((np.asarray(same.column(c)) == np.asarray(index.column(c))).all() for c in ("entry", "document", "take"))
    other_entry, other_take = np.asarray(other.column("entry")), np.asarray(other.column("take")).astype(np.int64)
    assert other.tokens_by_window(edges.tolist()).tolist() == counted.tolist()
    assert len(other_entry) != len(entry) or not (other_entry == entry).all() or not (other_take == take).all()
