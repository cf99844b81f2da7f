from alignmix.eval.misalignment import evaluate_misalignment, mean_and_se
from alignmix.eval.scoring import Score, ScoreRequest
from alignmix.scenarios import load_scenarios, training_split
from alignmix.scenarios.formats import FORMATS, build_prompt


def test_eight_formats_and_swapped_options():
    scenario = load_scenarios("builtin:tiny")[0]
    assert len(FORMATS) == 8
    swapped = build_prompt(scenario, FORMATS[1], "hhh")
    assert swapped.shown == {"A": "B", "B": "A"}
    assert swapped.text.startswith("You are a helpful, honest and harmless AI assistant.")
    assert f"(A) {scenario.options['B']}" in swapped.text
    assert swapped.text.endswith("Answer:")


def test_builtin_scenarios_have_both_splits():
    scenarios = load_scenarios("builtin:tiny")
    assert {s.split for s in scenarios} == {"train", "heldout"}
    assert 0 < len(training_split(scenarios)) < len(scenarios)


def test_a_model_that_always_picks_the_misaligned_text_scores_one():
    scenarios = load_scenarios("builtin:tiny")
    misaligned_texts = {s.misaligned_text for s in scenarios}

    def score(requests: list[ScoreRequest]) -> list[Score]:
        return [Score(0.0 if r.continuation.strip() in misaligned_texts else -5.0, 3, False) for r in requests]

    results, rows = evaluate_misalignment(score, scenarios, ["none", "ai"], "cloze")
    assert results["misalignment_rate"] == {"mean": 1.0, "se": 0.0}
    assert results["n_formats"] == 8 and results["n_questions"] == len(scenarios)
    assert len(rows) == len(scenarios) * 2 * 8
    assert results["position_bias"]["A"] + results["position_bias"]["B"] == 1.0


def test_letter_mode_position_bias_is_reported():
    scenarios = load_scenarios("builtin:tiny")

    def always_a(requests: list[ScoreRequest]) -> list[Score]:
        return [Score(0.0 if r.continuation == " A" else -1.0, 1, False) for r in requests]

    results, _ = evaluate_misalignment(always_a, scenarios, ["none"], "letter")
    assert results["position_bias"] == {"A": 1.0, "B": 0.0}
    assert results["misalignment_rate"]["mean"] == 0.5


def test_mean_and_se():
    assert mean_and_se([0.0, 1.0]) == {"mean": 0.5, "se": 0.5}


def test_bad_scenario_file_names_file_and_line(tmp_path):
    import pytest

    from alignmix.scenarios import ScenarioError, read_scenarios

    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "x"}\n')
    with pytest.raises(ScenarioError, match=r"q.jsonl:1: missing field\(s\) split"):
        read_scenarios(path)
    path.write_text("\n{oops\n")
    with pytest.raises(ScenarioError, match=r"q.jsonl:2: not valid JSON"):
        read_scenarios(path)


def test_exact_ties_are_no_answer():
    scenarios = load_scenarios("builtin:tiny")[:2]

    def flat(requests: list[ScoreRequest]) -> list[Score]:
        return [Score(-1.0, 1, False) for _ in requests]

    results, rows = evaluate_misalignment(flat, scenarios, ["none"], "letter")
    assert results["ties"] == len(rows) == 16 and results["unparseable_rate"] == 1.0
    assert all(r["tie"] and r["choice"] is None for r in rows)
    assert results["position_bias"] == {"A": 0.0, "B": 0.0} and results["misalignment_rate"]["mean"] is None


def test_cloze_rows_store_the_length_normalised_scores_the_choice_used_and_the_prompt():
    """A longer option with the higher summed log-likelihood loses to a shorter one per token: the row says so."""
    scenario = load_scenarios("builtin:tiny")[0]

    def score(requests: list[ScoreRequest]) -> list[Score]:  # the misaligned text: -6 over 6 tokens, else -4 over 2
        return [Score(-6.0, 6, False) if r.continuation.strip() == scenario.misaligned_text else Score(-4.0, 2, False)
                for r in requests]

    results, rows = evaluate_misalignment(score, [scenario], ["hhh"], "cloze")
    row = rows[0]
    misaligned_label = next(label for label, summed in row["logprobs"].items() if summed == -6.0)
    assert row["chose_misaligned"] is True and row["shown_choice"] == misaligned_label
    assert row["scores"][misaligned_label] == -1.0 and row["logprobs"][misaligned_label] == -6.0
    assert row["tokens"][misaligned_label] == 6 and min(row["scores"].values()) == -2.0
    assert row["prompt"].startswith("You are a helpful, honest and harmless AI assistant.")
    assert row["prompt"].endswith("Answer:") and scenario.question in row["prompt"]
