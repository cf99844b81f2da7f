"""Installing a released tokenizer for the mixer."""

import json
from pathlib import Path

from alignmix.corpus.tokenizer import install_tokenizer


def test_installing_the_gpt_neox_tokenizer(tmp_path: Path, shared_data: Path):
    folder = install_tokenizer(shared_data / "gpt-neox-20b-tokenizer" / "20B_tokenizer.json", tmp_path / "tok")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|endoftext|>"
    from litgpt import Tokenizer

    assert Tokenizer(folder).encode("Hello world").tolist() == [12092, 1533]
