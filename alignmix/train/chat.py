"""The chat template of SFT and DPO: `<|system|>`, `<|user|>`, `<|assistant|>` as special tokens.

A conversation is rendered turn by turn: `<|ROLE|>\\n` + content, then `\\n` after a system or user turn
and the tokenizer's end-of-text token after an assistant turn. A prompt for generation or scoring ends
with `<|assistant|>\\n`. The same template travels as Jinja in `tokenizer_config.json` (`chat_template`),
so transformers' `apply_chat_template` and chat backends render exactly what training saw.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from alignmix.checkpoints.tokenizer import configured_eos_token
from alignmix.llm.backend import Message
from alignmix.llm.chat_template import ALIGNMIX_CHAT_TEMPLATE
from alignmix.train.litgpt_config import TrainConfigError

ROLES = ("system", "user", "assistant")
CHAT_TOKENS = tuple(f"<|{role}|>" for role in ROLES)
IGNORE_INDEX = -100



class ChatDataError(TrainConfigError):
    """Chat or preference data that cannot be used: the message names the file and the example."""


def render(messages: list[Message], eos: str, generation_prompt: bool = False) -> str:
    """The conversation as text, exactly as `ALIGNMIX_CHAT_TEMPLATE` renders it."""
    parts = [f"<|{m['role']}|>\n{m['content']}" + (eos if m["role"] == "assistant" else "\n") for m in messages]
    return "".join(parts) + ("<|assistant|>\n" if generation_prompt else "")


def encode_with_labels(tokenizer: Tokenizer, messages: list[Message], eos: str) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and labels that keep only the assistant tokens (content + eos).

    Each segment is encoded on its own, so the label mask is exact at segment boundaries.
    """
    ids: list[int] = []
    labels: list[int] = []
    for message in messages:
        header = tokenizer.encode(f"<|{message['role']}|>\n", add_special_tokens=False).ids
        ids += header
        labels += [IGNORE_INDEX] * len(header)
        if message["role"] == "assistant":
            body = tokenizer.encode(message["content"] + eos, add_special_tokens=False).ids
            ids += body
            labels += body
        else:
            body = tokenizer.encode(message["content"] + "\n", add_special_tokens=False).ids
            ids += body
            labels += [IGNORE_INDEX] * len(body)
    return ids, labels


def install_chat_tokenizer(source_dir: Path, out_dir: Path, embedding_rows: int, stage: str) -> tuple[Tokenizer, str]:
    """Copy the tokenizer files of `source_dir` into `out_dir` with the chat tokens added as special tokens
    (where missing) and the chat template in tokenizer_config.json; returns the tokenizer and its eos token.

    Refuses, naming the stage, a tokenizer whose vocabulary (with the chat tokens) does not fit the model's
    `embedding_rows` (its padded_vocab_size).
    """
    tokenizer = Tokenizer.from_file(str(source_dir / "tokenizer.json"))
    missing = [t for t in CHAT_TOKENS if tokenizer.token_to_id(t) is None]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > embedding_rows:
        raise ChatDataError(
            f"stage '{stage}': the tokenizer in {source_dir} has {size:,} tokens with the chat tokens"
            f" {', '.join(CHAT_TOKENS)}, but the model embeds only {embedding_rows:,};"
            " raise the model's padded_vocab_size"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config_file = source_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    eos = configured_eos_token(source_dir)
    if eos is None or tokenizer.token_to_id(eos) is None:
        raise ChatDataError(f"{config_file}: no `eos_token` in the vocabulary to end assistant turns")
    config.update({"chat_template": ALIGNMIX_CHAT_TEMPLATE, "additional_special_tokens": list(CHAT_TOKENS)})
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return tokenizer, eos


def load_chat_tokenizer(folder: Path) -> tuple[Tokenizer, str]:
    """A tokenizer folder written by `install_chat_tokenizer`, and its eos token."""
    eos = configured_eos_token(folder)
    if eos is None:
        raise ChatDataError(f"{folder / 'tokenizer_config.json'}: no `eos_token`")
    return Tokenizer.from_file(str(folder / "tokenizer.json")), eos
