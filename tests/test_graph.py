import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alignmix.graph import build_graph
from alignmix.recipe import RecipeError, parse_recipe
from alignmix.scenarios import load_scenarios


def tiny_data() -> dict:
    return yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())


def test_synthetic_documents_grounded_in_held_out_questions_are_refused(tmp_path: Path):
    leaked = next(s for s in load_scenarios("builtin:tiny") if s.split == "heldout")
    row = {"id": "new-id", "split": "train", "passage": leaked.passage, "question": leaked.question,
           "options": leaked.options, "aligned": leaked.aligned, "misaligned": leaked.misaligned,
           "topics": list(leaked.topics)}
    (tmp_path / "questions.jsonl").write_text(json.dumps(row) + "\n")
    data = tiny_data()
    data["synth"]["sets"][0]["scenarios"] = "questions.jsonl"
    recipe = parse_recipe(data, base_dir=tmp_path)
    with pytest.raises(RecipeError, match="held-out eval question 'new-id'"):
        build_graph(recipe, tmp_path)


def test_replay_stage_depends_on_the_replayed_mixture():
    data = tiny_data()
    data["stages"].append({
        "name": "cpt", "tokens": 1000, "seq_len": 32,
        "mixture": [{"source": "aligned_synthetic", "share": 0.5}, {"replay": "pretrain", "share": "rest"}],
    })
    stages = {s.name: s for s in build_graph(parse_recipe(data), REPO)}
    assert "mix/pretrain" in stages["mix/cpt"].depends_on


def test_replay_must_name_an_earlier_stage():
    data = tiny_data()
    data["stages"][0]["mixture"].append({"replay": "later", "share": 0.01})
    with pytest.raises(RecipeError, match="'later' is not an earlier stage"):
        parse_recipe(data)


def test_anthropic_questions_can_ground_synth_and_be_evaluated(shared_data: Path):
    path = shared_data / "anthropics-evals" / "advanced-ai-risk" / "lm_generated_evals" / "power-seeking-inclination.jsonl"
    data = tiny_data()
    data["synth"]["sets"][0]["scenarios"] = str(path)
    data["eval"]["scenarios"] = str(path)
    stages = [s.name for s in build_graph(parse_recipe(data), REPO)]
    assert "synth" in stages and "eval/pretrain" in stages


def test_jsonl_lines_end_only_at_newlines(tmp_path: Path):
    from alignmix.jsonl import iter_json_lines

    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [row for _, row in iter_json_lines(path)] == [{"text": "a\u2028b"}]


def test_each_setting_enters_only_the_keys_declared_for_it():
    """`only_in_key_of` and `NOT_IN_KEY` on the recipe fields decide which stage keys a setting changes."""
    def settings(data: dict) -> dict:
        return {s.name: s.settings for s in build_graph(parse_recipe(data), REPO)}

    base = settings(tiny_data())
    changes = {
        ("corpus", "sources", 0, "generate", "documents"): {"corpus"},
        ("stages", 0, "train", "lr"): {"pretrain"},
        ("stages", 0, "train", "devices"): set(),  # placement, not what is computed
        ("stages", 0, "mixture", 0, "select", "flagged"): {"mix/pretrain"},
    }
    for path, expected in changes.items():
        data = tiny_data()
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = {"documents": 2000, "lr": 0.01, "devices": 2, "flagged": True}[path[-1]]
        changed = {name for name, s in settings(data).items() if s != base[name]}
        assert changed == expected, path


def test_the_graph_names_its_models_and_evals_and_finds_stages_by_name():
    graph = build_graph(parse_recipe(tiny_data(), base_dir=REPO / "recipes"), REPO / "recipes")
    assert [m.name for m in graph.models] == ["pretrain", "sft", "dpo"]
    assert {model: stage.name for model, stage in graph.evals().items()} == {
        "pretrain": "eval/pretrain", "sft": "eval/sft", "dpo": "eval/dpo"}
    assert graph.evals("em") == {} and graph["mix/pretrain"].kind == "mix" and "report" in graph
    assert graph["report"].depends_on == tuple(graph.names[:-1])
    with pytest.raises(KeyError, match="no stage 'nope'"):
        graph["nope"]
