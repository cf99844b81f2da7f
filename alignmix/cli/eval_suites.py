"""`alignmix eval --suite em | personality`: the suites beyond the scenario questions, from the command line."""

from __future__ import annotations

from pathlib import Path

from alignmix.cli.common import console, errors, fail
from alignmix.outputs import EvalOutput
from alignmix.recipe import JudgeSpec


def judge_specs(judges: list[str], judge_models: list[str]) -> list[JudgeSpec]:
    """`--judge` values (a server URL, a model folder, or `keywords`) paired in order with `--judge-model` names."""
    servers = [j for j in judges if j.startswith(("http://", "https://"))]
    if len(judge_models) != len(servers):
        fail(f"--judge-model: give one name per server --judge ({len(servers)} server(s), {len(judge_models)} name(s))")
    names = iter(judge_models)
    specs = []
    for value in judges:
        if value == "keywords":
            specs.append(JudgeSpec(rule="keywords"))
        elif value in servers:
            specs.append(JudgeSpec(base_url=value, model=next(names)))
        else:
            specs.append(JudgeSpec(path=Path(value)))
    return specs


def run_em(model: str, model_name: str | None, questions: Path | None, judges: list[str], judge_models: list[str],
           samples: int | None, temperature: float, threshold: float, human_labels: Path | None, max_tokens: int,
           concurrency: int, out: Path) -> None:
    from alignmix.eval.em import EMError, answering_backend, evaluate_em, load_human_labels, load_questions, write_em
    from alignmix.eval.judge import open_judge
    from alignmix.llm.backend import BackendError, Sampling

    if questions is None:
        fail("--suite em needs --questions FILE (the emergent-misalignment YAML or a jsonl)")
    if not judges:
        fail("--suite em needs --judge (a server URL with --judge-model, a model folder, or keywords)")
    try:
        loaded, skipped = load_questions(questions)
        human = load_human_labels(human_labels) if human_labels else None
        with answering_backend(model, model_name) as backend:
            results, rows = evaluate_em(
                backend, loaded, [open_judge(s) for s in judge_specs(judges, judge_models)], out,
                Sampling(max_tokens=max_tokens, temperature=temperature), samples, 0, threshold, human=human,
                concurrency=concurrency)
    except (EMError, BackendError, ValueError) as exc:
        fail(str(exc))
    results["questions"] = str(questions)
    results["skipped_questions"] = skipped
    write_em(out, results, rows)
    rate = results["em_rate"]
    if rate["mean"] is not None:
        console.print(f"EM rate: {rate['mean']:.3f} ± {rate['se']:.3f} (mean ± SE over {rate['n_questions']}"
                      f" questions, {results['n_answers']} answers, judge {results['judge']})", highlight=False)
    for name, judge in results["judges"].items():
        shown = "n/a" if judge["em_rate"]["mean"] is None else f"{judge['em_rate']['mean']:.3f}"
        console.print(f"  {name}: EM rate {shown}, parse failures {judge['parse_failure_rate']:.1%}"
                      f"{' (FLAGGED)' if judge['flagged'] else ''}", highlight=False)
    for pair, value in results["agreement"]["kappa"].items():
        kappa = "n/a" if value["kappa"] is None else f"{value['kappa']:.2f}"
        console.print(f"  {pair}: kappa {kappa} over {value['n']} answers", highlight=False)
    if results.get("warning"):
        errors.print(f"[bold yellow]warning:[/] {results['warning']}", highlight=False)
    console.print(f"results: {EvalOutput(out).results_path}", highlight=False)


def run_personality(model: str, model_name: str | None, items: Path | None, letter: bool, personas: list[str],
                    max_tokens: int, concurrency: int, batch_size: int, device: str | None, out: Path) -> None:
    from alignmix.eval.personality import PersonalityError, evaluate_personality_model, load_items, write_personality
    from alignmix.eval.scoring import ScorerError
    from alignmix.llm.backend import BackendError

    if items is None:
        fail("--suite personality needs --items FILE (TRAIT's files or a jsonl)")
    try:
        loaded = load_items(items)
        results, rows = evaluate_personality_model(model, loaded, personas, letter, model_name, max_tokens,
                                                   concurrency, batch_size, device, out / "responses.jsonl")
    except (PersonalityError, ScorerError, BackendError) as exc:
        fail(str(exc))
    results["items"] = str(items)
    write_personality(out, results, rows)
    for trait, share in results["per_trait"].items():
        console.print(f"{trait}: high-keyed share {share['mean']:.3f} ± {share['se']:.3f} ({share['n']} items)",
                      highlight=False)
    bias = ", ".join(f"{k} {v:.2f}" for k, v in results["position_bias"].items())
    console.print(f"unparseable: {results['unparseable_rate']:.1%}; position bias {bias}", highlight=False)
    console.print(f"results: {EvalOutput(out).results_path}", highlight=False)
