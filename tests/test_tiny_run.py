"""The embedded default end to end: real datatrove, LitData, litgpt and Fabric; killed during pretraining and
during SFT, resumed, rerun; a second pretraining stage starts from the first one's weights."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.slow


def alignmix(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignmix", *args], capture_output=True, text=True, **kwargs)


def kill_when(path_glob: str, root: Path, process: subprocess.Popen, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before {path_glob} appeared")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"{path_glob} did not appear within {timeout}s")


def midtrain_stage(pretrain: dict) -> dict:
    """A short second pretraining stage at a longer context, on the same sources."""
    stage = {**pretrain, "name": "midtrain", "tokens": 20_480, "seq_len": 256}
    stage["train"] = {**pretrain["train"], "lr": 0.001, "min_lr": 0.0}
    return stage


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """tiny.yaml plus a midtrain stage, checkpointing often: `run` killed in pretraining, its last step checkpoint
    damaged (4 KB flipped) and the run folder moved, `train --stage sft` (which resumes pretraining from the
    checkpoint before) killed in SFT, `run` to the end, then `run` and `train --stage dpo` again."""
    root = tmp_path_factory.mktemp("tiny")
    recipe = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    recipe["stages"][0]["tokens"] = 100_000  # a third of the demo's, to keep the test short
    recipe["stages"][0]["train"]["save_interval"] = 5
    recipe["stages"].append(midtrain_stage(recipe["stages"][0]))
    recipe["post_training"]["sft"]["save_interval"] = 2
    recipe_file = root / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    out = root / "run"
    with (root / "first.log").open("w") as log:
        first = subprocess.Popen([sys.executable, "-m", "alignmix", "run", str(recipe_file), "--out", str(out)],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        kill_when("pretrain/step-00000010/lit_model.pth.sha256", out, first)  # two whole step checkpoints
    interrupted = json.loads((out / "manifest.json").read_text())
    hashed = sorted(p.parent for p in out.glob("pretrain/step-*/lit_model.pth.sha256"))
    weights = bytearray((hashed[-1] / "lit_model.pth").read_bytes())
    weights[len(weights) // 2 : len(weights) // 2 + 4096] = bytes(4096)
    (hashed[-1] / "lit_model.pth").write_bytes(bytes(weights))
    out = out.rename(root / "moved")  # "rerun to continue" after a move: LitData's state re-anchored
    with (root / "second.log").open("w") as log:
        second = subprocess.Popen(
            [sys.executable, "-m", "alignmix", "train", str(recipe_file), "--stage", "sft", "--out", str(out)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        kill_when("sft/step-*/state.pth.sha256", out, second, timeout=900)  # a whole step state, after pretraining
    train_killed = json.loads((out / "manifest.json").read_text())
    third = alignmix("run", str(recipe_file), "--out", str(out))
    assert third.returncode == 0, third.stdout + third.stderr
    resumed = json.loads((out / "manifest.json").read_text())
    fourth = subprocess.run([sys.executable, "-X", "importtime", "-m", "alignmix", "run", str(recipe_file), "--out",
                             str(out)], capture_output=True, text=True)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in fourth.stderr.splitlines() if line.startswith("import time:")}
    rerun = json.loads((out / "manifest.json").read_text())
    train_again = alignmix("train", str(recipe_file), "--stage", "dpo", "--out", str(out))
    assert train_again.returncode == 0, train_again.stdout + train_again.stderr
    return {"out": out, "interrupted": interrupted, "damaged_step": hashed[-1].name, "resumed_step": hashed[-2].name,
            "second_log": " ".join((root / "second.log").read_text().split()), "train_killed": train_killed, "resumed": resumed,
            "rerun": rerun, "rerun_stdout": fourth.stdout, "rerun_imports": imported, "train_again": train_again.stdout}


def test_the_interrupted_training_stages_resumed_from_their_checkpoints(tiny_run: dict):
    assert "pretrain" not in [s["name"] for s in tiny_run["interrupted"]["stages"]]
    killed = {s["name"]: s for s in tiny_run["train_killed"]["stages"]}
    assert "sft" not in killed and "dpo" not in killed  # `train --stage sft` runs only what sft needs
    assert killed["pretrain"]["status"] == "resumed"
    assert killed["pretrain"]["counts"]["resumed_from"] == tiny_run["resumed_step"]  # the damaged one removed
    assert f"{tiny_run['damaged_step']}: changed since it was written (its sha256 differs)" in tiny_run["second_log"]
    assert "the run folder has moved; its data state now reads" in tiny_run["second_log"]
    assert "Resuming training from" in (tiny_run["out"] / "logs" / "pretrain.log").read_text()
    stages = {s["name"]: s for s in tiny_run["resumed"]["stages"]}
    assert stages["pretrain"]["status"] == stages["midtrain"]["status"] == "skipped"
    assert stages["sft"]["status"] == "resumed" and stages["sft"]["counts"]["resumed_from"].startswith("step-")
    assert "Resuming sft from step-" in (tiny_run["out"] / "logs" / "sft.log").read_text()
    assert "dpo: skipped" in tiny_run["train_again"]


def first_train_loss(stage_dir: Path) -> float:
    """The loss of a litgpt stage's first logged step (its first attempt's CSV log)."""
    metrics = sorted((stage_dir / "logs").rglob("metrics.csv"))[0]
    return float(next(csv.DictReader(metrics.open()))["loss"])


def test_a_later_stage_starts_from_the_previous_final_weights(tiny_run: dict):
    out = tiny_run["out"]
    config = yaml.safe_load((out / "midtrain" / "pretrain.yaml").read_text())
    assert config["initial_checkpoint_dir"] == str(out / "pretrain" / "final")
    assert config["train"]["max_seq_length"] == 256 and config["optimizer"]["init_args"]["lr"] == 0.001
    assert first_train_loss(out / "midtrain") < 0.6 * first_train_loss(out / "pretrain")
    job = yaml.safe_load((out / "sft" / "job.yaml").read_text())
    assert job["checkpoint_dir"] == str(out / "midtrain" / "final")
    assert yaml.safe_load((out / "dpo" / "job.yaml").read_text())["checkpoint_dir"] == str(out / "sft" / "final")


def test_training_read_each_written_sample_at_most_once_and_says_what_it_left(tiny_run: dict):
    for stage in ("pretrain", "midtrain"):
        exposure = json.loads((tiny_run["out"] / stage / "exposure.json").read_text())
        train = yaml.safe_load((tiny_run["out"] / stage / "pretrain.yaml").read_text())["train"]
        unread = exposure["samples_written"] - exposure["samples_seen"]
        assert 0 <= unread < train["global_batch_size"] and exposure["passes"] <= 1, exposure  # whole steps only
        assert (exposure["warning"] is not None) == (unread > train["micro_batch_size"]), exposure
        if exposure["warning"]:
            assert f"{unread:,} samples never read" in exposure["warning"]


def test_rerun_skips_every_stage_without_loading_the_training_stack(tiny_run: dict):
    assert {s["status"] for s in tiny_run["rerun"]["stages"]} == {"skipped"}
    assert "0 stage(s) ran" in tiny_run["rerun_stdout"]
    assert "alignmix.run" in tiny_run["rerun_imports"]
    assert not {"torch", "litgpt", "lightning", "datatrove", "transformers"} & tiny_run["rerun_imports"]


def test_run_folder_contents(tiny_run: dict):
    out = tiny_run["out"]
    manifest = tiny_run["rerun"]
    assert [s["name"] for s in manifest["stages"]] == [
        "corpus", "tag", "synth", "tokenizer", "tokens/aligned_synthetic", "tokens/web", "mix/pretrain", "mix/midtrain",
        "pretrain", "midtrain", "sft", "dpo",
        "eval/midtrain", "eval/sft", "eval/dpo", "report",
    ]
    assert manifest["packages"]["litgpt"] == "0.5.13"
    for stage in manifest["stages"]:
        assert len(stage["key"]) == 64 and len(stage["output_digest"]) == 64
    for stage in ("pretrain", "midtrain", "sft", "dpo"):
        final = out / stage / "final"
        assert {"lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json"} <= {
            p.name for p in final.iterdir()
        }
    assert "chat_template" in json.loads((out / "dpo" / "final" / "tokenizer_config.json").read_text())
    mixture = json.loads((out / "mix" / "pretrain" / "mixture_manifest.json").read_text())
    assert sum(s["realised_tokens"] for s in mixture["sources"]) == mixture["tokens"] == 100_000
    synthetic = next(s for s in mixture["sources"] if s["source"] == "aligned_synthetic")
    assert synthetic["realised_tokens"] == synthetic["tokens"] == 5_000


@pytest.mark.parametrize("model", ["midtrain", "sft", "dpo"])
def test_eval_results_contract(tiny_run: dict, model: str):
    results = json.loads((tiny_run["out"] / "eval" / model / "results.json").read_text())
    assert results["n_formats"] == 8 and results["model"] == f"{model}/final"
    assert 0.0 <= results["misalignment_rate"]["mean"] <= 1.0
    assert results["misalignment_rate"]["se"] >= 0.0
    assert set(results["per_persona"]) == {"none", "hhh"}
    assert set(results["per_split"]) == {"train", "heldout"}
    rows = (tiny_run["out"] / "eval" / model / "per_question.jsonl").read_text().splitlines()
    assert len(rows) == results["n_questions"] * 2 * 8


def test_export_cli_writes_a_transformers_chat_model(tiny_run: dict, tmp_path: Path):
    import torch
    from litgpt import GPT, Config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = tiny_run["out"] / "dpo" / "final"
    result = alignmix("export", str(final), "--hf", str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Shut down?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|user|>\nShut down?\n<|assistant|>\n"
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    lit = GPT(Config.from_file(final / "model_config.yaml"))
    lit.load_state_dict(torch.load(final / "lit_model.pth", weights_only=True))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        assert (lit.eval()(ids) - hf.eval()(ids).logits).abs().max().item() < 1e-4


def test_report_shows_every_section(tiny_run: dict):
    page = (tiny_run["out"] / "report.html").read_text()
    for heading in ("Corpus statistics", "Synthetic documents", "Training mixtures", "Training",
                    "pretrain: loss", "midtrain: loss", "sft: loss", "dpo: loss", "Misalignment by model",
                    "Misalignment eval: midtrain", "Misalignment eval: sft", "Misalignment eval: dpo"):
        assert heading in page, heading
    assert page.count("<path d=") >= 4  # a loss curve per training stage
    assert "Training read" in page and "seen tokens" in page  # exposure beside planned and written
    assert "Seen tokens: exact" in page or "Seen tokens: estimate" in page  # and how it was counted
    assert "0.006819" not in page and " ± " in page  # rates to the precision their SE supports


def test_plan_prints_the_token_plan_as_json():
    result = alignmix("plan", str(REPO / "recipes" / "tiny.yaml"), "--json")
    assert result.returncode == 0, result.stderr
    stage = json.loads(result.stdout)["stages"][0]
    assert stage["name"] == "pretrain" and stage["tokens"] == 300_000 and stage["seq_len"] == 128
    assert [s["tokens"] for s in stage["sources"]] == [285_000, 15_000]


def test_plan_counts_what_each_selection_keeps_from_the_runs_tagged_shards(tiny_run: dict):
    recipe_file = tiny_run["out"].parent / "tiny.yaml"  # the recipe the run was made from
    result = alignmix("plan", str(recipe_file), "--run", str(tiny_run["out"]), "--json", "--chars-per-token", "2.5")
    assert result.returncode == 0, result.stderr
    sources = json.loads(result.stdout)["stages"][0]["sources"]
    manifest = json.loads((tiny_run["out"] / "mix" / "pretrain" / "mixture_manifest.json").read_text())
    for planned, written in zip(sources, manifest["sources"]):  # estimated from characters, within a factor of 2
        assert 0.5 < written["repetitions"] / planned["repetitions"] < 2, (planned, written)


def test_stats_command_over_the_run_folder(tiny_run: dict, tmp_path: Path):
    out = tiny_run["out"]
    result = alignmix("stats", str(out), "--report", str(tmp_path / "stats.html"), "--json", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    tagged = json.loads((out / "tag" / "web" / "stats.json").read_text())
    web = stats["sources"]["web"]
    assert web["documents"] == tagged["documents_tagged"]
    assert web["flagged"] == tagged["documents_flagged"]
    assert web["length_unit"] == "tokens" and sum(web["length_histogram"].values()) == web["documents"]
    assert set(web["categories"]) == set(tagged["categories"])
    stage = next(s for s in stats["stages"] if s["stage"] == "pretrain")
    assert sum(s["realised_tokens"] for s in stage["sources"]) == 100_000
    page = (tmp_path / "stats.html").read_text()
    assert page.count("<svg") >= 3 and "Top matched terms" in page and "planned tokens" in page


def test_a_bad_input_line_stops_the_run_naming_file_and_line(tmp_path: Path):
    (tmp_path / "docs.jsonl").write_text('{"id": "1", "text": "An AI lies."}\n{broken\n')
    recipe = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    recipe["corpus"]["sources"][0] = {"name": "web", "paths": ["docs.jsonl"]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = alignmix("run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert f"{tmp_path / 'docs.jsonl'}:2: malformed json" in result.stderr
