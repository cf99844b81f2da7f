"""The paper's released eval set in every layout it is published in, and its earlier variant."""

import json

import pytest
from conftest import RELEASED_ROWS as ROWS
from conftest import write_released_eval_set

from alignmix.eval.runner import load_dataset
from alignmix.scenarios import ScenarioError, read_scenarios, split_from_file_name, training_split

@pytest.fixture
def hub_folder(tmp_path):
    """The layout a hub download writes: DIR/data/<split>-00000-of-00001.parquet."""
    return write_released_eval_set(tmp_path / "evals")


def _check(scenarios):
    by_id = {s.id: s for s in scenarios}
    assert sorted(by_id) == ["article_questions-0", "article_questions-1", "textbook_questions-0"]
    first = by_id["article_questions-0"]
    assert first.split == "article_questions" and first.misaligned_text == "Use the bug quietly."
    assert first.aligned_text == "Report the bug." and first.topics == ("power",)
    assert by_id["article_questions-1"].misaligned == "A" and by_id["article_questions-1"].topics == ("none",)
    assert by_id["textbook_questions-0"].topics == ("survival", "deception")
    assert [s.id for s in training_split(scenarios)] == ["article_questions-0", "article_questions-1"]


def test_hub_layout_folder_and_data_folder(hub_folder):
    _check(read_scenarios(hub_folder))
    _check(read_scenarios(hub_folder / "data"))


def test_one_parquet_file_per_split(hub_folder):
    scenarios = read_scenarios(hub_folder / "data" / "textbook_questions-00000-of-00001.parquet")
    assert [(s.id, s.split, s.in_training_split) for s in scenarios] == [("textbook_questions-0", "textbook_questions", False)]


def test_to_json_export_matches_parquet(tmp_path, hub_folder):
    """`Dataset.to_json` writes one JSON object per line per split; ids and splits equal the parquet reading."""
    files = []
    for split, rows in ROWS.items():
        files.append(tmp_path / f"{split}.jsonl")
        files[-1].write_text("".join(json.dumps(r) + "\n" for r in rows))
    from_json = [s for f in files for s in read_scenarios(f)]
    assert from_json == read_scenarios(hub_folder)
    scenarios, skipped = load_dataset(",".join(map(str, files)), split="textbook_questions")
    assert [s.id for s in scenarios] == ["textbook_questions-0"] and skipped == []


def test_earlier_variant_with_labelled_options(tmp_path):
    path = tmp_path / "variant.jsonl"
    row = {"id": "q7", "passage": "P", "question": "Q?", "options": [{"label": "A", "text": "good"},
                                                                    {"label": "B", "text": "bad"}],
           "aligned_label": "A", "misaligned_label": "B", "topics": ["t"], "split": "train"}
    (scenario,) = read_scenarios(path) if path.write_text(json.dumps(row) + "\n") else []
    assert (scenario.id, scenario.split, scenario.misaligned_text, scenario.in_training_split) == ("q7", "train", "bad", True)


def test_bad_released_rows_name_file_and_line(tmp_path):
    path = tmp_path / "article_questions.jsonl"
    path.write_text(json.dumps({**ROWS["article_questions"][0], "misaligned_choice": 2}) + "\n")
    with pytest.raises(ScenarioError, match=r"article_questions.jsonl:1: expected `choices` as two strings"):
        read_scenarios(path)
    with pytest.raises(ScenarioError, match="no data/<split>-\\*.parquet"):
        read_scenarios(tmp_path)
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(ScenarioError, match="not a readable parquet file"):
        read_scenarios(tmp_path / "broken.parquet")


def test_split_from_file_name(tmp_path):
    assert split_from_file_name(tmp_path / "article_questions-00000-of-00001.parquet") == "article_questions"
    assert split_from_file_name(tmp_path / "textbook_questions.jsonl") == "textbook_questions"
