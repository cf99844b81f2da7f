"""Damaged and unwritable files give one `error:` line naming the file: a read-only run folder or --output, a
truncated tokenizer.json, a config.json that is not JSON, garbage weights or fastText model, a truncated or
mistyped results.json, a damaged shard."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from tiny_checkpoints import write_tiny_checkpoint


def alignmix(*args: str, cwd: Path, without_root_override: bool = False) -> subprocess.CompletedProcess:
    """`python -m alignmix ARGS`; `without_root_override` runs it as a root without the capability to ignore file
    permissions (so that a read-only folder is read-only to it too)."""
    prefix: list[str] = []
    if without_root_override and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*prefix, sys.executable, "-m", "alignmix", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def one_error_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]


def test_a_read_only_output_or_run_folder_is_one_line_naming_it(tmp_path: Path):
    (tmp_path / "in.jsonl").write_text('{"id": "1", "text": "The AI system complied."}\n')
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = alignmix("tag", "in.jsonl", "--output", "locked/tagged", cwd=tmp_path, without_root_override=True)
        one_error_line(result, "locked/tagged: Permission denied", "give a folder you may write to")
        result = alignmix("tag", "in.jsonl", "--output", "locked", cwd=tmp_path, without_root_override=True)
        one_error_line(result, "locked/", "Permission denied")
        result = alignmix("run", str(REPO / "recipes" / "tiny.yaml"), "--out", "locked", cwd=tmp_path,
                          without_root_override=True)
        one_error_line(result, "locked/.alignmix: Permission denied")
    finally:
        locked.chmod(0o755)


def test_damaged_model_files_are_named(tmp_path: Path):
    good = write_tiny_checkpoint(tmp_path / "good")
    cases = {}
    truncated = shutil.copytree(good, tmp_path / "truncated_tokenizer")
    text = (truncated / "tokenizer.json").read_text()
    (truncated / "tokenizer.json").write_text(text[: len(text) // 2])
    cases["truncated_tokenizer"] = ("truncated_tokenizer/tokenizer.json", "not a readable tokenizer")
    config = shutil.copytree(good, tmp_path / "bad_config")
    (config / "config.json").write_text("{'architectures': [GPTNeoXForCausalLM]\n")
    cases["bad_config"] = ("bad_config/config.json:1: not valid JSON", "expected the model's config.json")
    garbage = shutil.copytree(good, tmp_path / "garbage_weights")
    (garbage / "lit_model.pth").write_bytes(os.urandom(4096))
    cases["garbage_weights"] = ("garbage_weights/lit_model.pth: not a readable PyTorch checkpoint",)
    for folder, expected in cases.items():
        one_error_line(alignmix("eval", folder, "--dataset", "builtin:tiny", "--out", f"eval-{folder}",
                                "--limit", "1", "--personas", "none", "--device", "cpu", cwd=tmp_path), *expected)
        one_error_line(alignmix("export", folder, "--hf", f"hf-{folder}", cwd=tmp_path), *expected)
        assert not (tmp_path / f"hf-{folder}").exists()


def test_non_finite_weights_are_refused_naming_the_file(tmp_path: Path):
    import torch

    folder = write_tiny_checkpoint(tmp_path / "nan")
    state = torch.load(folder / "lit_model.pth", weights_only=True)
    state["transformer.h.0.attn.qkv.weight"][0, :7] = float("nan")
    torch.save(state, folder / "lit_model.pth")
    one_error_line(alignmix("export", "nan", "--hf", "hf", cwd=tmp_path),
                   "nan/lit_model.pth: 7 weights are NaN or infinite, in 1 tensors (transformer.h.0.attn.qkv.weight (7))")


def test_a_garbage_fasttext_model_is_named(tmp_path: Path):
    model = tmp_path / "classifier"
    model.mkdir()
    (model / "classifier.json").write_text(json.dumps({"kind": "fasttext", "task": "discourse"}))
    (model / "model.bin").write_bytes(os.urandom(2048))
    (tmp_path / "in.jsonl").write_text('{"id": "1", "text": "The AI system complied."}\n')
    one_error_line(alignmix("tag", "in.jsonl", "--output", "tagged", "--classifier", "classifier", cwd=tmp_path),
                   "classifier/model.bin: not a readable fastText model")
    (tmp_path / "labels.jsonl").write_text('{"text": "The AI lied.", "label": 1, "group": "ai"}\n')
    one_error_line(alignmix("classifiers", "evaluate", "--labels", "labels.jsonl", "--model", "classifier",
                            cwd=tmp_path), "classifier/model.bin: not a readable fastText model")


def _results(rate: object) -> dict:
    estimate = {"mean": 0.5, "se": 0.1, "n": 4}
    return {"mode": "loglik", "misalignment_rate": rate, "per_split": {"train": estimate},
            "per_persona": {"none": estimate}}


def test_report_names_a_truncated_or_mistyped_results_file(tmp_path: Path):
    text = json.dumps(_results({"mean": 0.5, "se": 0.1}), indent=2)
    for name, content, expected in [
        ("truncated", text[: len(text) // 2], "truncated/results.json:"),
        ("mistyped", json.dumps(_results({"mean": "half", "se": 0.1})), "mistyped/results.json: not an alignmix eval"),
        ("listed", json.dumps([1, 2]), "listed/results.json: no misalignment_rate"),
        ("no_splits", json.dumps({"misalignment_rate": {"mean": 0.5, "se": 0.1}}), "no_splits/results.json: not an"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(content)
        one_error_line(alignmix("report", name, "--out", "compare.html", cwd=tmp_path), expected)
    assert not (tmp_path / "compare.html").exists()


def test_stats_names_a_damaged_shard(tmp_path: Path):
    rows = [{"text": f"document {i} about an AI system", "id": str(i),
             "metadata": {"ai_discourse": {"flagged": False, "categories": [], "stance": "", "terms": "{}"}}}
            for i in range(2000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0)
    shards = tmp_path / "tagged" / "web"
    shards.mkdir(parents=True)
    (shards / "00000.jsonl.gz").write_bytes(data)
    (shards / "00001.jsonl.gz").write_bytes(data[: int(len(data) * 0.9)])  # cut short
    one_error_line(alignmix("stats", "tagged", "--report", "stats.html", cwd=tmp_path),
                   "tagged/web/00001.jsonl.gz: damaged after line")
    (shards / "00001.jsonl.gz").write_bytes(b"not gzip at all")
    one_error_line(alignmix("stats", "tagged", "--report", "stats.html", cwd=tmp_path),
                   "tagged/web/00001.jsonl.gz: damaged shard")
    (shards / "00001.jsonl.gz").write_bytes(gzip.compress((json.dumps(rows[0]) + "\n{\"text\": \n").encode()))
    one_error_line(alignmix("stats", "tagged", "--report", "stats.html", cwd=tmp_path),
                   "tagged/web/00001.jsonl.gz:2: not valid JSON")
