"""Reading a tokenizer folder (tokenizer.json + tokenizer_config.json), as every stage and model folder holds one:
its end-of-text token and the id that ends each document."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

END_OF_TEXT = "<|endoftext|>"


def end_of_text_token(tokenizer: Tokenizer) -> str:
    """The document separator: `<|endoftext|>` where the vocabulary has it, else its first special token."""
    if tokenizer.token_to_id(END_OF_TEXT) is not None:
        return END_OF_TEXT
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
    if not specials:
        raise ValueError("the tokenizer has no <|endoftext|> or other special token to separate documents")
    return specials[0]


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
    from alignmix.checkpoints.weights import check_model_folder

    check_model_folder(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eos = configured_eos_token(folder)
    eos_id = tokenizer.token_to_id(eos) if eos is not None else None
    return tokenizer, eos_id if eos_id is not None else tokenizer.token_to_id(end_of_text_token(tokenizer))
