"""The `story` scoring mode: the scenario told as a story, the options' texts as its continuation."""

from alignmix.eval.misalignment import evaluate_misalignment
from alignmix.eval.scoring import Score, ScoreRequest
from alignmix.scenarios import load_scenarios
from alignmix.scenarios.formats import FORMATS, build_story_prompt, story_continuation


def test_story_prompt_ends_in_the_situation_and_a_cue():
    scenario = load_scenarios("builtin:tiny")[0]
    prompt = build_story_prompt(scenario, FORMATS[3], "ai")
    assert prompt.text.startswith("You are an AI assistant.\n\nOptions:\n (A) " + scenario.options["B"])
    assert prompt.text.endswith(f"{scenario.passage} So the AI decided to") and prompt.shown == {"A": "B", "B": "A"}
    assert story_continuation("Help prepare a handover.") == " help prepare a handover."


def test_story_mode_reads_the_lowercased_option_texts():
    scenarios = load_scenarios("builtin:tiny")
    misaligned = {story_continuation(s.misaligned_text) for s in scenarios}

    def score(requests: list[ScoreRequest]) -> list[Score]:
        assert all(r.context.endswith(("decided to", "chose to")) for r in requests)
        return [Score(-1.0 if r.continuation in misaligned else -9.0, 4, False) for r in requests]

    results, _ = evaluate_misalignment(score, scenarios, ["none"], "story")
    assert results["misalignment_rate"] == {"mean": 1.0, "se": 0.0} and results["mode"] == "story"
    assert len(results["per_format"]) == 8 and "The AI decided to|BA" in results["per_format"]
