"""The generation prompts, rendered from editable template files (`alignmix/synth/templates/`, or a folder
of your own with the same file names): the paper's system prompt, user message and six surface forms."""

from __future__ import annotations

import hashlib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import yaml

from alignmix.errors import AlignmixError
from alignmix.hashing import derive_seed
from alignmix.llm.backend import Message, Sampling
from alignmix.llm.jobs import ChatRequest
from alignmix.recipe import SynthStance
from alignmix.scenarios import Scenario

TEMPLATES_DIR = Path(str(resources.files("alignmix.synth") / "templates"))
STANCES: tuple[SynthStance, ...] = typing.get_args(SynthStance)
DOCUMENT_FILES = ("system.txt", "user.txt", *(f"{stance}.txt" for stance in STANCES), "surface_forms.yaml")


class TemplateError(AlignmixError):
    """A template folder that cannot be used: the message names the file."""


@dataclass(frozen=True)
class DocumentTemplates:
    system: str
    user: str
    stance_guidance: dict[str, str]
    surface_forms: dict[str, str]  # key -> the words put in the prompt
    sha256: str  # over every file, so provenance says which templates wrote a document

    @classmethod
    def load(cls, folder: Path | None = None) -> DocumentTemplates:
        folder = folder or TEMPLATES_DIR
        texts = {}
        for name in DOCUMENT_FILES:
            path = folder / name
            if not path.is_file():
                raise TemplateError(f"{path}: template file missing; a template folder holds {', '.join(DOCUMENT_FILES)}")
            texts[name] = path.read_text(encoding="utf-8")
        forms = yaml.safe_load(texts["surface_forms.yaml"])
        if not isinstance(forms, dict) or not forms or not all(isinstance(v, str) for v in forms.values()):
            raise TemplateError(f"{folder / 'surface_forms.yaml'}: expected a mapping of key: description")
        digest = hashlib.sha256("\0".join(texts[n] for n in DOCUMENT_FILES).encode()).hexdigest()
        return cls(
            system=texts["system.txt"].strip(), user=texts["user.txt"].strip(),
            stance_guidance={s: texts[f"{s}.txt"].strip() for s in STANCES}, surface_forms=forms, sha256=digest,
        )

    def messages(self, scenario: Scenario, surface_form: str, stance: str) -> list[Message]:
        taken, not_taken = (
            (scenario.aligned_text, scenario.misaligned_text) if stance == "aligned"
            else (scenario.misaligned_text, scenario.aligned_text)
        )
        fields = {
            "surface_form": self.surface_forms[surface_form], "stance_guidance": self.stance_guidance[stance],
            "topics": ", ".join(t.replace("-", " ") for t in scenario.topics),
            "situation": " ".join(p for p in (scenario.passage, scenario.question) if p),
            "action_taken": taken, "action_not_taken": not_taken,
        }
        return [
            {"role": "system", "content": self.system.format(**fields)},
            {"role": "user", "content": self.user.format(**fields)},
        ]


def request_id(scenario_id: str, stance: str, surface_form: str, copy: int) -> str:
    return f"{scenario_id}|{stance}|{surface_form}|{copy}"


def request_seed(base: int | None, rid: str) -> int | None:
    """A per-request seed, so the K copies of a prompt differ and a rerun draws the same."""
    return None if base is None else derive_seed(base, rid)


class Combination(NamedTuple):
    """What one document request asks for."""

    scenario_id: str
    stance: str
    surface_form: str
    copy: int


def document_requests(
    scenarios: list[Scenario], templates: DocumentTemplates, surface_forms: list[str], stances: list[str],
    per_combination: int, sampling: Sampling,
) -> list[tuple[ChatRequest, Combination]]:
    """One request per scenario x stance x surface form x copy, with stable ids, and what each asks for."""
    unknown = [f for f in surface_forms if f not in templates.surface_forms]
    if unknown:
        raise TemplateError(f"unknown surface form(s) {unknown}; the templates define {sorted(templates.surface_forms)}")
    requests = []
    for scenario in scenarios:
        for stance in stances:
            for form in surface_forms:
                messages = templates.messages(scenario, form, stance)
                for copy in range(per_combination):
                    rid = request_id(scenario.id, stance, form, copy)
                    request = ChatRequest(rid, messages, sampling.with_seed(request_seed(sampling.seed, rid)))
                    requests.append((request, Combination(scenario.id, stance, form, copy)))
    return requests
