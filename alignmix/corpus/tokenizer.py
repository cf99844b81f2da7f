"""The tokenizer folder every stage shares: a user's (tokenizer.json) or a byte-level BPE trained on the corpus."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


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


def end_of_text_token(tokenizer: Tokenizer) -> str:
    """The document separator: `<|endoftext|>` where the vocabulary has it, else its first special token."""
    if tokenizer.token_to_id(END_OF_TEXT) is not None:
        return END_OF_TEXT
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
    if not specials:
        raise ValueError("the tokenizer has no <|endoftext|> or other special token to separate documents")
    return specials[0]


def _write_config(out_dir: Path, eos: str) -> None:
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eos, "eos_token": eos, "add_bos_token": False}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def configured_eos_token(folder: Path) -> str | None:
    """The `eos_token` of a folder's tokenizer_config.json (stored as text or as {"content": ...}), else None."""
    config_file = folder / "tokenizer_config.json"
    eos = json.loads(config_file.read_text()).get("eos_token") if config_file.is_file() else None
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos if isinstance(eos, str) else None


def load_tokenizer(folder: Path) -> tuple[Tokenizer, int]:
    """The tokenizer in `folder` and the id that ends each document: the `eos_token` of its
    tokenizer_config.json (what litgpt uses), else `<|endoftext|>` or its first special token."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eos = configured_eos_token(folder)
    eos_id = tokenizer.token_to_id(eos) if eos is not None else None
    return tokenizer, eos_id if eos_id is not None else tokenizer.token_to_id(end_of_text_token(tokenizer))
