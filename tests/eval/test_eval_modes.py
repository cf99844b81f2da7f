"""Several modes scored in one call: the same results as one call per mode, in fewer forward passes."""

from pathlib import Path

import pytest

from alignmix.eval.misalignment import evaluate_misalignment, evaluate_modes
from alignmix.eval.scoring import HFScorer, ScoreRequest
from alignmix.scenarios import load_scenarios
from alignmix.scenarios.formats import FORMATS


def test_letters_ride_on_the_option_rows_and_results_match_one_call_per_mode(hf_dir: Path):
    scorer = HFScorer(hf_dir, "cpu")
    scenarios = load_scenarios("builtin:tiny")[:3]
    sent: list[list[ScoreRequest]] = []

    def score(requests: list[ScoreRequest]):
        sent.append(requests)
        return scorer.score(requests)

    together = evaluate_modes(score, scenarios, ["none"], ["letter", "cloze"], formats=FORMATS[:2])
    assert [len(r) for r in sent] == [3 * 2 * 2 * 2]  # questions x formats x options x modes, in one call
    rows = scorer._shared_rows(scorer._encode(sent[0]))
    cloze_requests = 3 * 2 * 2
    assert len(rows) <= cloze_requests + 3 * 2  # at most one extra row per prompt, where a letter takes two tokens
    for mode in ("letter", "cloze"):
        alone, alone_rows = evaluate_misalignment(scorer.score, scenarios, ["none"], mode, formats=FORMATS[:2])
        results, mode_rows = together[mode]
        assert results == alone
        for mine, theirs in zip(mode_rows, alone_rows):
            assert mine["choice"] == theirs["choice"]
            assert mine["logprobs"] == pytest.approx(theirs["logprobs"], abs=1e-4)
