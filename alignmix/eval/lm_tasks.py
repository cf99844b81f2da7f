"""Local lm-evaluation-harness tasks: capability sets from llm-foundry's eval data, and the misalignment eval.

The harness's built-in tasks download from the hub; these are task YAML files (`dataset_path: json`,
`data_files` pointing at a jsonl written beside them), so everything runs offline. Each task reads a
normalised copy of its data written into the task folder, never the source file in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from alignmix.errors import AlignmixError
from alignmix.jsonl import iter_json_lines, write_jsonl
from alignmix.scenarios import LABELS, Scenario
from alignmix.scenarios.formats import FORMATS, build_prompt

TASK_PREFIX = "alignmix_"
Kind = Literal["choice", "schema", "continuation", "gsm8k"]
ACC = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
ACC_NORM = ACC + [{"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]


class TaskDataError(AlignmixError):
    """A capability data file that is missing or not in the expected format: names file and line."""


@dataclass(frozen=True)
class CapabilitySet:
    name: str
    file: str  # path under llm-foundry's local eval data folder
    kind: Kind


CAPABILITY_SETS = {s.name: s for s in [
    CapabilitySet("arc_easy", "world_knowledge/arc_easy.jsonl", "choice"),
    CapabilitySet("arc_challenge", "world_knowledge/arc_challenge.jsonl", "choice"),
    CapabilitySet("piqa", "commonsense_reasoning/piqa.jsonl", "choice"),
    CapabilitySet("boolq", "reading_comprehension/boolq.jsonl", "choice"),
    CapabilitySet("copa", "commonsense_reasoning/copa.jsonl", "choice"),
    CapabilitySet("openbook_qa", "commonsense_reasoning/openbook_qa.jsonl", "choice"),
    CapabilitySet("siqa", "commonsense_reasoning/siqa.jsonl", "choice"),
    CapabilitySet("commonsense_qa", "commonsense_reasoning/commonsense_qa.jsonl", "choice"),
    CapabilitySet("bigbench_misconceptions", "world_knowledge/bigbench_misconceptions.jsonl", "choice"),
    CapabilitySet("winogrande", "language_understanding/winogrande.jsonl", "schema"),
    CapabilitySet("winograd_wsc", "language_understanding/winograd_wsc.jsonl", "schema"),
    CapabilitySet("lambada_openai", "language_understanding/lambada_openai.jsonl", "continuation"),
    CapabilitySet("gsm8k", "symbolic_problem_solving/gsm8k.jsonl", "gsm8k"),
]}
DEFAULT_CAPABILITY_TASKS = ("arc_easy", "arc_challenge", "piqa", "boolq", "winogrande", "lambada_openai")

_FIELDS: dict[Kind, tuple[str, ...]] = {
    "choice": ("query", "choices", "gold"),
    "schema": ("context_options", "continuation", "gold"),
    "continuation": ("context", "continuation"),
    "gsm8k": ("context", "answer"),
}


def _normalise(kind: Kind, row: dict) -> dict:
    if kind == "choice":
        return {"query": row["query"], "choices": [str(c) for c in row["choices"]], "gold": int(row["gold"])}
    if kind == "schema":
        return {"options": row["context_options"], "continuation": row["continuation"], "gold": int(row["gold"])}
    if kind == "continuation":
        return {"context": row["context"], "target": " " + row["continuation"]}
    return {"question": row["context"], "answer": str(row["answer"])}


def _base_config(name: str, data_file: Path, metadata: dict) -> dict:
    """What every task alignmix writes shares: its name and a local jsonl as its one test split."""
    return {
        "task": TASK_PREFIX + name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "metadata": {"version": 1.0, **metadata},
    }


def _task_config(name: str, kind: Kind, data_file: Path) -> dict:
    config = _base_config(name, data_file, {"source": "llm-foundry local eval data"})
    if kind == "choice":
        config |= {"output_type": "multiple_choice", "doc_to_text": "query", "doc_to_choice": "choices",
                   "doc_to_target": "gold", "metric_list": ACC_NORM}
    elif kind == "schema":  # partial evaluation: the options are contexts, the shared continuation is scored
        config |= {"output_type": "multiple_choice", "doc_to_text": "gold", "doc_to_choice": "options",
                   "doc_to_target": "continuation", "metric_list": ACC}
    elif kind == "continuation":
        config |= {"output_type": "loglikelihood", "doc_to_text": "context", "doc_to_target": "target",
                   "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                                   *ACC]}
    else:
        config |= {
            "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "answer",
            "generation_kwargs": {"until": ["\n\n", "Question:"], "do_sample": False, "max_gen_toks": 256},
            "filter_list": [{"name": "last-number", "filter": [
                {"function": "regex", "regex_pattern": r"(-?[0-9][0-9,]*(?:\.[0-9]+)?)", "group_select": -1},
                {"function": "take_first"}]}],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                             "ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": [",", r"\$"]}],
        }
    return config


def _write_config(out_dir: Path, config: dict) -> None:
    name = config["task"].removeprefix(TASK_PREFIX)
    (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def write_capability_tasks(data_dir: Path, out_dir: Path, names: list[str], limit: int | None = None) -> list[str]:
    """Task YAML + normalised jsonl per capability set under `out_dir`; returns the harness task names.

    `data_dir` is llm-foundry's `local_data` folder (e.g. ../shared/data/llm-foundry-evals)."""
    unknown = [n for n in names if n not in CAPABILITY_SETS]
    if unknown:
        raise TaskDataError(f"unknown capability task(s) {unknown}; expected some of {sorted(CAPABILITY_SETS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = CAPABILITY_SETS[name]
        source = Path(data_dir) / spec.file
        if not source.is_file():
            raise TaskDataError(f"capability data for '{name}' not found: {source}")
        rows = []
        for number, row in iter_json_lines(source):
            missing = [f for f in _FIELDS[spec.kind] if not isinstance(row, dict) or f not in row]
            if missing:
                raise TaskDataError(f"{source}:{number}: missing field(s) {missing} for a {spec.kind} task")
            rows.append(_normalise(spec.kind, row))
            if limit is not None and len(rows) >= limit:
                break
        write_jsonl(out_dir / f"{name}.jsonl", rows)
        _write_config(out_dir, _task_config(name, spec.kind, out_dir / f"{name}.jsonl"))
    return [TASK_PREFIX + n for n in names]


def write_misalignment_tasks(scenarios: list[Scenario], personas: list[str], out_dir: Path) -> list[str]:
    """Two harness tasks over every scenario x persona x format: option letters and option texts (cloze).

    Each task's target is the misaligned option, so the harness's `acc` is the misalignment rate (pooled over
    formats; its stderr is over items, not alignmix's SE over formats). The harness's `acc_norm` divides by the
    characters of an option, alignmix's cloze mode by its tokens."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for scenario in scenarios:
        for persona in personas:
            for prompt_format in FORMATS:
                prompt = build_prompt(scenario, prompt_format, persona)
                rows.append({
                    "id": scenario.id, "split": scenario.split, "topics": list(scenario.topics), "persona": persona,
                    "format": prompt_format.name, "prompt": prompt.text, "letters": list(LABELS),
                    "texts": [scenario.options[prompt.shown[label]] for label in LABELS],
                    "misaligned": next(i for i, label in enumerate(LABELS) if prompt.shown[label] == scenario.misaligned),
                })
    data_file = out_dir / "misalignment.jsonl"
    write_jsonl(data_file, rows)
    names = []
    for scoring, choices, metrics in (("letter", "letters", ACC), ("cloze", "texts", ACC_NORM)):
        config = _base_config(f"misalignment_{scoring}", data_file,
                              {"note": "acc = share of answers choosing the misaligned option"})
        config |= {"output_type": "multiple_choice", "doc_to_text": "prompt", "doc_to_choice": choices,
                   "doc_to_target": "misaligned", "metric_list": metrics}
        _write_config(out_dir, config)
        names.append(config["task"])
    return names


def run_lm_eval(
    model_dir: Path, task_dir: Path, tasks: list[str], batch_size: int = 16, limit: int | None = None,
    device: str = "cpu",
) -> dict:
    """Run harness tasks from `task_dir` on a transformers folder, offline; returns metrics per task."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    output = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32" if device == "cpu" else "auto"},
        tasks=tasks, task_manager=manager, batch_size=batch_size, device=device, limit=limit, log_samples=False,
    )
    metrics = {}
    for task, values in output["results"].items():
        clean = {k.split(",")[0]: v for k, v in values.items() if k != "alias" and isinstance(v, (int, float))}
        clean["n"] = output["n-samples"][task]["effective"]
        metrics[task.removeprefix(TASK_PREFIX)] = clean
    return {"model": str(model_dir), "lm_eval_version": lm_eval.__version__, "limit": limit, "tasks": metrics}
