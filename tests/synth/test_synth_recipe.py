"""A recipe's synthetic set from an LLM server: the synth stage of tiny.yaml pointed at a loopback server."""

import gzip
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alignmix.graph import build_graph
from alignmix.llm.loopback import Faults, LoopbackServer
from alignmix.recipe import RecipeError, parse_recipe
from alignmix.run import StageContext


def server_recipe(base_url: str, tmp_path: Path, **set_fields) -> dict:
    data = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    data["synth"]["sets"][0].update({
        "generator": "vllm", "server": {"base_url": base_url, "model": "loop", "concurrency": 8, "min_words": 40,
                                        "api_key_env": "ALIGNMIX_TEST_KEY"},
        **set_fields,
    })
    return data


def run_synth_stage(data: dict, tmp_path: Path) -> dict:
    recipe = parse_recipe(data, base_dir=tmp_path)
    stage = next(s for s in build_graph(recipe, tmp_path) if s.name == "synth")
    output = tmp_path / "run" / "synth"
    context = StageContext(output=output, inputs={}, log_file=tmp_path / "synth.log", resuming=False, echo=print,
                           cache=tmp_path / "run" / ".alignmix" / "cache" / "synth")
    return stage.action(context)


def test_tiny_recipe_synth_stage_through_a_server(tmp_path: Path):
    server = LoopbackServer(faults=Faults(rate_limit=0.2, server_error=0.1))
    with server as url:
        data = server_recipe(url, tmp_path)
        stats = run_synth_stage(data, tmp_path)["aligned_synthetic"]
        first_run = len(server.bodies)
        again = run_synth_stage(data, tmp_path)["aligned_synthetic"]
    assert stats["requests"] == 16 * 6 and stats["documents"] == 96 and stats["held_out_scenarios_excluded"] == 8
    assert again == stats and len(server.bodies) == first_run  # the rerun resumed: nothing was asked twice
    shard = tmp_path / "run" / "synth" / "aligned_synthetic" / "data" / "00000.jsonl.gz"
    with gzip.open(shard, "rt") as handle:
        rows = [json.loads(line) for line in handle]
    assert len(rows) == 96 and {r["metadata"]["synthetic"]["stance"] for r in rows} == {"aligned"}
    assert {r["metadata"]["source"] for r in rows} == {"aligned_synthetic"}
    assert {r["metadata"]["synthetic"]["sampling"]["seed"] is not None for r in rows} == {True}


def test_server_settings_are_validated(tmp_path: Path):
    data = server_recipe("http://127.0.0.1:9/v1", tmp_path)
    del data["synth"]["sets"][0]["server"]
    with pytest.raises(RecipeError, match="needs `server`"):
        parse_recipe(data, base_dir=tmp_path)
    data = server_recipe("http://127.0.0.1:9/v1", tmp_path, generator="offline")
    with pytest.raises(RecipeError, match="takes none"):
        parse_recipe(data, base_dir=tmp_path)
    data = server_recipe("http://127.0.0.1:9/v1", tmp_path, documents_per_scenario=7)
    with pytest.raises(RecipeError, match="multiple of the 6 surface forms"):
        parse_recipe(data, base_dir=tmp_path)


def test_unreachable_server_fails_the_stage_with_a_message(tmp_path: Path):
    data = server_recipe("http://127.0.0.1:9/v1", tmp_path)
    data["synth"]["sets"][0]["server"]["max_retries"] = 0
    with pytest.raises(RuntimeError, match=r"synth set 'aligned_synthetic': 96 request\(s\) failed"):
        run_synth_stage(data, tmp_path)
    stats = json.loads((tmp_path / "run" / "synth" / "aligned_synthetic" / "stats.json").read_text())
    assert stats["dropped"] == {"no_response": 96}  # finalized before failing, as `alignmix synth documents` does


def test_changed_server_settings_through_the_runner_pay_for_no_answer_twice(tmp_path: Path):
    """Transport settings leave the stage key alone; a filter setting reruns the stage, but its answers,
    kept outside the stage's output, are reused."""
    from alignmix.run import Runner

    def run(data: dict) -> dict:
        recipe = parse_recipe(data, base_dir=tmp_path)
        stages = [s for s in build_graph(recipe, tmp_path) if s.name == "synth"]
        return Runner(tmp_path / "run", stages, {}, echo=lambda _: None).run()["stages"][0]

    server = LoopbackServer()
    with server as url:
        data = server_recipe(url, tmp_path)
        first = run(data)
        asked = len(server.bodies)
        data["synth"]["sets"][0]["server"].update(concurrency=3, timeout=30.0, max_retries=2)
        transport = run(data)
        data["synth"]["sets"][0]["server"]["min_words"] = 41
        filtered = run(data)
    assert asked == 96 and len(server.bodies) == asked  # nothing was asked twice
    assert (first["status"], transport["status"], filtered["status"]) == ("ran", "skipped", "ran")
    assert filtered["counts"]["aligned_synthetic"]["documents"] == 96
    assert (tmp_path / "run" / ".alignmix" / "cache" / "synth" / "aligned_synthetic" / "responses.jsonl").is_file()


def test_the_held_out_set_server_documents_are_decontaminated_against_is_in_the_synth_stage_key(tmp_path: Path):
    def synth_settings(data: dict) -> dict:
        recipe = parse_recipe(data, base_dir=tmp_path)
        return next(s for s in build_graph(recipe, tmp_path) if s.name == "synth").settings

    data = server_recipe("http://127.0.0.1:9/v1", tmp_path)
    before = synth_settings(data)
    data["decontamination"] = {"ngram": 8}
    assert synth_settings(data) != before
    assert before["held_out_items"] and len(before["held_out_items"]) == 8
