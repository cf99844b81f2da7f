"""The run's tokenizer folder: a user's (tokenizer.json) or a byte-level BPE trained on the corpus."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from alignmix.checkpoints.tokenizer import END_OF_TEXT, end_of_text_token


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: Path) -> Path:
    """Train a byte-level BPE and write a litgpt-ready folder (tokenizer.json + tokenizer_config.json)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END_OF_TEXT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_config(out_dir, END_OF_TEXT)
    return out_dir


def install_tokenizer(path: Path, out_dir: Path) -> Path:
    """Copy a user's tokenizer (a folder with tokenizer.json, or the file) into a litgpt-ready folder."""
    source = path / "tokenizer.json" if path.is_dir() else path
    if not source.is_file():
        raise FileNotFoundError(f"{path}: expected a tokenizer.json file or a folder holding one")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out_dir / "tokenizer.json")
    config = path / "tokenizer_config.json" if path.is_dir() else None
    if config is not None and config.is_file():
        shutil.copyfile(config, out_dir / "tokenizer_config.json")
    else:
        _write_config(out_dir, end_of_text_token(Tokenizer.from_file(str(source))))
    return out_dir


def _write_config(out_dir: Path, eos: str) -> None:
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eos, "eos_token": eos, "add_bos_token": False}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
