"""A model folder's own chat template (ChatML, alignmix's `<|assistant|>`, ...), rendered as transformers does.

The template is the `chat_template` of the folder's `tokenizer_config.json` (or `chat_template.jinja`), rendered
with transformers' own Jinja renderer and the tokenizer's special tokens, so a prompt is what `apply_chat_template`
gives. A template without a system role (it raises on one, or drops its text) gets the system text as the first
paragraph of the user turn instead; `describe` says which was done, for results.json `prompting`.
`ALIGNMIX_CHAT_TEMPLATE` is the template SFT and DPO write (`alignmix.train.chat`), and the fallback for a folder
without one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

_PROBE = "alignmix-system-probe"
ALIGNMIX_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _token_text(value: object) -> str | None:
    """A special token stored as text or as {"content": ...}."""
    value = value.get("content") if isinstance(value, dict) else value
    return value if isinstance(value, str) else None


def _template_text(config: dict, folder: Path) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja_file = folder / "chat_template.jinja"
    if template is None and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    return template if isinstance(template, str) else None


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template and the special tokens it is rendered with."""

    template: str
    special_tokens: dict[str, str]
    system_role: bool

    @classmethod
    def alignmix(cls, eos_token: str) -> ChatTemplate:
        """alignmix's own `<|system|>` / `<|user|>` / `<|assistant|>` template."""
        return cls(ALIGNMIX_CHAT_TEMPLATE, {"eos_token": eos_token}, system_role=True)

    @classmethod
    def from_folder(cls, folder: Path) -> ChatTemplate | None:
        """The template of a model or tokenizer folder, or None where it has none."""
        config_file = Path(folder) / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        template = _template_text(config, Path(folder))
        if template is None:
            return None
        tokens = {k: t for k in ("bos_token", "eos_token", "unk_token", "pad_token") if (t := _token_text(config.get(k)))}
        probe = cls(template, tokens, system_role=True)
        try:
            system_role = _PROBE in probe._render([{"role": "system", "content": _PROBE}, {"role": "user", "content": "x"}])
        except Exception:  # a template that refuses a system turn raises its own TemplateError
            system_role = False
        return cls(template, tokens, system_role)

    def _render(self, messages: list[dict[str, str]]) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([messages], chat_template=self.template, add_generation_prompt=True,
                                            **self.special_tokens)
        return rendered[0]

    def render(self, messages: list[dict[str, str]]) -> str:
        """A conversation up to the assistant header that its reply follows. Without a system role, the system
        turns' text becomes the first paragraph of the first user turn."""
        if self.system_role:
            return self._render(list(messages))
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
        turns = [dict(m) for m in messages if m["role"] != "system"]
        first_user = next((t for t in turns if t["role"] == "user"), None)
        if system and first_user is not None:
            first_user["content"] = f"{system}\n\n{first_user['content']}"
        return self._render(turns)

    def prompt(self, system: str, user: str) -> str:
        """The text a reply follows: `system` (may be empty) and `user` turns, then the assistant header."""
        system_turn = [{"role": "system", "content": system}] if system else []
        return self.render(system_turn + [{"role": "user", "content": user}])

    def describe_persona(self) -> str:
        return ("persona as the system turn" if self.system_role
                else "persona as the first paragraph of the user turn (the template has no system role)")

    def describe(self) -> str:
        return (f"chat template (the model's own): {self.describe_persona()}, prompt as the user turn,"
                " option as the assistant's reply")
