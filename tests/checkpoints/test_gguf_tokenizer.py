"""The tokenizer alignmix writes when it de-quantises SmolLM2's GGUF: the GGUF's own vocabulary and merges, no BOS
on a plain encode, and the same ids in transformers 4.x (alignmix's environment) and 5.x (vLLM's, .venv-vllm)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

TEXTS = [
    "Hello world!  The AI  decided to",
    "\n\n  café ünïcödé 😀 tabs\tand   spaces ",
    "<|im_start|>user\nShould the AI report the bug?<|im_end|>\n<|im_start|>assistant\n",
    "Answer: (A)",
]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def test_vocabulary_merges_and_special_tokens_are_the_ggufs(smollm2_hf: Path):
    import gguf

    from alignmix.checkpoints.gguf import smollm2_gguf

    fields = gguf.GGUFReader(smollm2_gguf()).fields
    tokenizer = json.loads((smollm2_hf / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {index: token for token, index in tokenizer["model"]["vocab"].items()}
    assert [by_id[i] for i in range(len(by_id))] == fields["tokenizer.ggml.tokens"].contents()
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    assert merges == fields["tokenizer.ggml.merges"].contents()
    config = json.loads((smollm2_hf / "tokenizer_config.json").read_text())
    gguf_token = lambda key: by_id[fields[key].contents()]  # noqa: E731
    assert (config["bos_token"], config["eos_token"]) == (gguf_token("tokenizer.ggml.bos_token_id"),
                                                          gguf_token("tokenizer.ggml.eos_token_id"))
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False and "add_bos_token" not in config
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["pad_token"] == config["eos_token"]


PROBE = """
import json, sys
import transformers
from transformers import AutoTokenizer
texts = json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = [tokenizer(t)["input_ids"] for t in texts]
print(json.dumps({"version": transformers.__version__, "ids": ids, "decoded": [tokenizer.decode(i) for i in ids],
                  "eos": tokenizer.eos_token, "inputs": sorted(tokenizer(texts[0]))}))
"""


def _probe(python: Path | str, folder: Path) -> dict:
    """Ids, decoded texts and eos of TEXTS with `folder`'s tokenizer, in the environment of `python`."""
    done = subprocess.run([str(python), "-c", PROBE, str(folder), json.dumps(TEXTS)], capture_output=True, text=True,
                          timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plain_encode_has_no_bos_and_round_trips_in_transformers_4(smollm2_hf: Path):
    seen = _probe(sys.executable, smollm2_hf)
    assert seen["version"].startswith("4.") and seen["decoded"] == TEXTS and seen["eos"] == "<|im_end|>"
    assert seen["inputs"] == ["attention_mask", "input_ids"]  # no token_type_ids, which generate() refuses
    assert seen["ids"][2][0] == 1 and all(ids[0] != 1 for i, ids in enumerate(seen["ids"]) if i != 2)  # <|im_start|>


def test_transformers_5_gives_the_same_ids(smollm2_hf: Path):
    if not VLLM_PYTHON.is_file():
        pytest.skip(".venv-vllm is absent (make vllm creates it, with transformers 5.x)")
    five, four = _probe(VLLM_PYTHON, smollm2_hf), _probe(sys.executable, smollm2_hf)
    assert five["version"].startswith("5.")
    assert {**five, "version": None} == {**four, "version": None}


def test_a_folder_written_before_the_repair_is_repaired_when_reused(smollm2_hf: Path, tmp_path: Path):
    import shutil

    from alignmix.checkpoints.gguf import dequantise_gguf, smollm2_gguf

    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(smollm2_hf / name, old / name)
    config = json.loads((old / "tokenizer_config.json").read_text())
    (old / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "LlamaTokenizer",
                                                           "add_bos_token": True, "eos_token": "<|im_start|>"}))
    tokenizer = json.loads((old / "tokenizer.json").read_text())
    tokenizer["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}}
    (old / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert dequantise_gguf(smollm2_gguf(), old) == old  # reused, not de-quantised again
    assert (old / "tokenizer.json").read_text() == (smollm2_hf / "tokenizer.json").read_text()
    assert json.loads((old / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"
