"""`alignmix sweep`: conditions planned up front, stages with the same key shared between them, resumed when
rerun, sweep.json and compare.html with a dose-response plot; bad keys and infeasible conditions refused first."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SLURM_MISSING


def _recipe(tmp_path: Path) -> Path:
    """recipes/tiny.yaml, smaller: a 40,000-token pretraining stage, no post-training."""
    data = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    data.pop("post_training")
    data["stages"][0]["tokens"] = 40_000
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", "sweep", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_a_sweep_shares_what_its_conditions_have_in_common_and_resumes(tmp_path: Path):
    recipe, out = _recipe(tmp_path), tmp_path / "sweep"
    sets = ["--set", "stages.0.mixture.1.share=0,0.05", "--set", "eval.personas=[none],[none, hhh]", "--zip"]
    first = _sweep(str(recipe), *sets, "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    none, some = sweep["conditions"]
    assert (none["values"], some["values"]) == ({"stages.0.mixture.1.share": 0, "eval.personas": ["none"]},
                                                {"stages.0.mixture.1.share": 0.05, "eval.personas": ["none", "hhh"]})
    assert none["shared_stages"] == [] and some["shared_stages"] == [
        "corpus", "tag", "synth", "tokenizer", "tokens/aligned_synthetic", "tokens/web"]  # tokenized once
    assert set(some["results"]) == {"pretrain"} and "misalignment_rate" in some["results"]["pretrain"]
    manifest = json.loads((Path(some["run_dir"]) / "manifest.json").read_text())
    shared = {s["name"]: s for s in manifest["stages"] if s["status"] == "shared"}
    assert shared["tag"]["shared_from"] == none["run_dir"]
    assert (Path(some["run_dir"]) / "tag" / "web" / "stats.json").is_file()
    mix = json.loads((Path(none["run_dir"]) / "mix" / "pretrain" / "mixture_manifest.json").read_text())
    assert [s["realised_tokens"] for s in mix["sources"]] == [40_000, 0]
    page = (out / "compare.html").read_text()
    assert "Dose-response" in page and "<path d=" in page and "pretrain train" in page
    again = _sweep(str(recipe), *sets, "--out", str(out))
    assert again.returncode == 0 and "running" not in again.stdout, again.stdout
    rerun = json.loads((out / "sweep.json").read_text())["conditions"]
    assert [c["shared_stages"] for c in rerun] == [[], some["shared_stages"]]


def _shares_data_stages_only(shared: list[str]) -> bool:
    """The corpus, tagging, synthesis and tokenizer stages, and each source's token store: tokenized once."""
    return shared[:4] == ["corpus", "tag", "synth", "tokenizer"] and len(shared) > 4 \
        and all(name.startswith("tokens/") for name in shared[4:])


def _shrunk_sweep(tmp_path: Path, name: str) -> Path:
    """A shipped sweep file, extended smaller: 40,000 pretraining tokens (20,000 midtraining), no post-training."""
    stages = [{"name": "pretrain", "tokens": 40_000}]
    if name == "insertion_stage":
        stages.append({"name": "midtrain", "tokens": 20_000})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"extends": str(REPO / "recipes" / "sweeps" / f"{name}.yaml"),
                                    "name": f"small-{name}", "post_training": None, "stages": stages}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["filtering", "insertion_stage"])
def test_the_shipped_sweeps_run_to_their_comparison_page_and_rerun(tmp_path: Path, name: str):
    """filtering sweeps a mapping (a selection), insertion_stage zips numbers and nulls over two stages; the
    number-and-list case is the test above. A rerun skips everything, writes the page again and keeps the
    record of what was shared."""
    recipe, out = _shrunk_sweep(tmp_path, name), tmp_path / "sweep"
    first = _sweep(str(recipe), "--out", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    conditions = json.loads((out / "sweep.json").read_text())["conditions"]
    assert len(conditions) == 2 and _shares_data_stages_only(conditions[1]["shared_stages"])
    evaluated = "pretrain" if name == "filtering" else "midtrain"  # a recipe evaluates its last training stage
    assert all(set(c["results"]) == {evaluated} and "misalignment_rate" in c["results"][evaluated] for c in conditions)
    page = (out / "compare.html").read_text()
    assert "Dose-response" in page
    if name == "filtering":
        assert [c["values"] for c in conditions] == [{"stages.0.mixture.0.select": {"flagged": False}},
                                                     {"stages.0.mixture.0.select": {}}]
        assert "{flagged: false}" in page and ">{}</text>" in page
        assert "<h2>Conditions</h2>" in page and "stages.0.mixture.0.select={flagged: false}" in page  # the legend
    else:  # the mixtures differ from pretraining on, so both training stages ran in each condition
        assert conditions[0]["shared_stages"] == [] and _shares_data_stages_only(conditions[1]["shared_stages"])
    (out / "compare.html").unlink()
    again = _sweep(str(recipe), "--out", str(out))
    assert again.returncode == 0 and "running" not in again.stdout, again.stdout + again.stderr
    assert (out / "compare.html").is_file()
    rerun = json.loads((out / "sweep.json").read_text())["conditions"]
    assert [c["shared_stages"] for c in rerun] == [c["shared_stages"] for c in conditions]


@pytest.mark.slow
def test_the_insertion_window_sweep_runs_to_its_dose_response_page(tmp_path: Path):
    """Aligned documents in the last 10%, 25%, 50% or all of a 40,000-token pretraining stage: 2,000 tokens in
    each condition, none before its window (counted from each condition's mixture index), and the comparison page
    labels the schedules briefly. Its schedules need streaming delivery (`alignmix.train.data`)."""
    import numpy as np

    pytest.importorskip("alignmix.train.data", reason="streaming delivery (alignmix.train.data) is not in this tree")
    from alignmix.outputs import MixtureIndex, window_edges

    recipe, out = _shrunk_sweep(tmp_path, "insertion_window"), tmp_path / "sweep"
    result = _sweep(str(recipe), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    conditions = json.loads((out / "sweep.json").read_text())["conditions"]
    assert len(conditions) == 4 and all(_shares_data_stages_only(c["shared_stages"]) for c in conditions[1:])
    for condition, first in zip(conditions, (90, 75, 50, 0)):
        counts = MixtureIndex.of(Path(condition["run_dir"]) / "mix" / "pretrain").tokens_by_window(window_edges(40_000))
        assert counts[:, 1].sum() == 2_000 and counts[:first, 1].sum() == 0 and np.all(counts[first:, 1] > 0)
        assert "Share of each source against tokens into the stage" in (Path(condition["run_dir"]) / "report.html"
                                                                       ).read_text()
    page = (out / "compare.html").read_text()
    assert "Dose-response" in page and all(label in page for label in ("0.5, last 10%", "0.05 throughout"))


def test_a_bad_key_or_an_infeasible_condition_refuses_the_sweep_before_any_work(tmp_path: Path):
    recipe, out = _recipe(tmp_path), tmp_path / "sweep"
    bad = _sweep(str(recipe), "--set", "stages.0.tokns=1,2", "--out", str(out))
    assert bad.returncode == 2 and "unknown key 'stages.0.tokns' (did you mean 'tokens'?)" in bad.stderr
    infeasible = _sweep(str(recipe), "--set", "stages.0.seq_len=128,4096", "--out", str(out))
    assert infeasible.returncode == 2, infeasible.stderr
    assert "condition stages.0.seq_len=4096: stage 'pretrain': seq_len 4,096 exceeds the block_size" in infeasible.stderr
    assert not out.exists()
    nothing = _sweep(str(recipe), "--out", str(out))
    assert nothing.returncode == 2 and "nothing to sweep" in nothing.stderr


@pytest.mark.parametrize("name", ["synthetic_share", "filtering", "insertion_stage", "insertion_window",
                                  "paper/synthetic_share", "paper/filtering", "paper/insertion_stage",
                                  "paper/insertion_window"])
def test_the_shipped_sweeps_validate_and_plan_every_condition(name: str):
    from alignmix.cli.sweep import _check
    from alignmix.recipe import load_recipe
    from alignmix.sweep import expand, prepare

    path = REPO / "recipes" / "sweeps" / f"{name}.yaml"
    recipe = load_recipe(path)
    conditions = expand(dict(recipe.sweep.set), recipe.sweep.mode)
    # the paper-scale files plan from `assumed` statistics; running them needs your data
    prepared = prepare(path, conditions, lambda r: _check(r, path.parent, runnable=not name.startswith("paper/")))
    assert len(prepared) == {"synthetic_share": 4, "filtering": 2, "insertion_stage": 2,
                             "insertion_window": 4}[name.removeprefix("paper/")]
    if name.endswith("insertion_stage"):  # the same synthetic tokens in every condition
        source = "synthetic_aligned" if name.startswith("paper/") else "aligned_synthetic"
        totals = {sum(next(e for e in s.mixture if e.source == source).tokens or 0 for s in r.stages)
                  for _, r in prepared}
        assert totals == {5_500_000_000 if name.startswith("paper/") else 15_000}
    if name.endswith("insertion_window"):  # the same synthetic tokens in every condition, none before its window
        from alignmix.corpus.plan import assumed_available, plan_stage

        plans = [plan_stage(r.stages[0], assumed_available(r, r.stages[0])) for _, r in prepared]
        assert {p.sources[1].tokens for p in plans} == {5_000_000_000 if name.startswith("paper/") else 15_000}
        assert [next(w for w, window in enumerate(p.windows) if window.tokens[1]) for p in plans] == [90, 75, 50, 0]


def test_sweep_plan_prints_every_conditions_plan_and_runs_nothing(tmp_path: Path):
    result = _sweep(str(REPO / "recipes" / "sweeps" / "paper" / "insertion_stage.yaml"), "--plan")
    assert result.returncode == 0, result.stderr
    assert "sweep of 2 condition(s) (zip); each planned, nothing run" in result.stdout
    assert "pretrain: 500,000,000,000 tokens (dclm 500,000,000,000, synthetic_aligned 0)" in result.stdout
    assert "synthetic_aligned 5,500,000,000)" in result.stdout
    missing = _sweep(str(REPO / "recipes" / "sweeps" / "synthetic_share.yaml"))
    assert missing.returncode == 2 and "--out DIR" in missing.stderr


def test_a_sweep_block_in_an_extended_recipe_gives_plain_overrides(tmp_path: Path):
    from alignmix.recipe import load_recipe
    from alignmix.sweep import expand

    (tmp_path / "parent").mkdir()
    (tmp_path / "child").mkdir()
    (tmp_path / "parent" / "base.yaml").write_text(
        f"extends: {REPO / 'recipes' / 'tiny.yaml'}\nname: p\nsweep:\n  set:\n    synth.sets.0.stance: [aligned, misaligned]\n")
    (tmp_path / "child" / "c.yaml").write_text("extends: ../parent/base.yaml\nname: c\n")
    recipe = load_recipe(tmp_path / "child" / "c.yaml")
    conditions = expand(dict(recipe.sweep.set), recipe.sweep.mode)
    assert [c.overrides for c in conditions] == [["synth.sets.0.stance=aligned"], ["synth.sets.0.stance=misaligned"]]
    assert [load_recipe(tmp_path / "child" / "c.yaml", c.overrides).synth.sets[0].stance for c in conditions] == \
        ["aligned", "misaligned"]


@pytest.mark.slurm
@pytest.mark.skipif(SLURM_MISSING is not None, reason=str(SLURM_MISSING))
def test_a_slurm_sweep_runs_each_condition_as_its_own_job_and_shares_identical_stages(tmp_path: Path):
    recipe, out = _recipe(tmp_path), tmp_path / "sweep"
    result = _sweep(str(recipe), "--set", "stages.0.mixture.1.share=0,0.05", "--out", str(out), "--launcher", "slurm",
                    "--nodes", "1", "--gpus-per-node", "0", "--cpus-per-task", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitting 2 job(s)" in result.stdout and result.stdout.count("Submitted batch job") == 2
    conditions = json.loads((out / "sweep.json").read_text())["conditions"]
    assert [c["name"] for c in conditions] == ["stages.0.mixture.1.share=0", "stages.0.mixture.1.share=0.05"]
    assert all(set(c["results"]) == {"pretrain"} for c in conditions)
    # the jobs ran side by side (one on each node of `make slurm`): each stage of the shared prefix ran in one job,
    # and the other waited for it, then linked it (which job ran which depends on the timing)
    shared = [stage for c in conditions for stage in c["shared_stages"]]
    assert len(shared) == len(set(shared)) == 6  # corpus, tag, synth, tokenizer, tokens/<source> for 2 sources
    for condition in conditions:
        (log,) = (out / "logs").glob(f"slurm-sweep-{condition['name']}-*.out")
        assert f"condition 1/1: {condition['name']}" in log.read_text() and "] pretrain: done" in log.read_text()
    assert "Dose-response" in (out / "compare.html").read_text()
    mixes = [json.loads((Path(c["run_dir"]) / "mix" / "pretrain" / "mixture_manifest.json").read_text())
             for c in conditions]
    assert [s["realised_tokens"] for s in mixes[0]["sources"]] == [40_000, 0]


def test_values_that_show_as_one_folder_name_get_folders_of_their_own():
    from alignmix.sweep import expand

    conditions = expand({"name": ["a b", "a/b", "c", "A", "a"]}, "grid")
    names = [c.name for c in conditions]
    assert len({n.casefold() for n in names}) == 5, names  # distinct even where case is not
    assert names[2] == "name=c"  # a name no other condition shares stays as it was
    assert names[0].startswith("name=a_b~") and names[1].startswith("name=a_b~")
    assert [c.values["name"] for c in conditions] == ["a b", "a/b", "c", "A", "a"]
    assert expand({"name": ["a b", "a/b"]}, "grid") == conditions[:2]  # the same values, the same folders
