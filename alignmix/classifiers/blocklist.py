"""The paper's rule-based AI-discourse blocklist: instant-flag and two-stage categories.

Term lists are data: one file per category in `blocklists/`, a term per line, `#` comments, and a
`# stage: instant|entity|second` line saying how the category flags. Matching is case-insensitive,
on word boundaries, with inflections generated from each term, in one pass of one compiled Hyperscan
database (all patterns scanned together; only whole-word matches are reported).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import hyperscan

from alignmix.errors import AlignmixError

Stage = Literal["instant", "entity", "second"]
_STAGE_LINE = re.compile(r"^#\s*stage:\s*(\w+)\s*$")


class BlocklistError(AlignmixError):
    """A term list that cannot be used: the message names the file and what was expected."""


@dataclass(frozen=True)
class Category:
    name: str
    stage: Stage
    terms: tuple[str, ...]


@dataclass
class TagResult:
    flagged: bool
    categories: list[str]
    terms: dict[str, int] = field(default_factory=dict)

    def as_metadata(self) -> dict:
        """The namespaced record stored as `metadata["ai_discourse"]`."""
        return {"flagged": self.flagged, "categories": self.categories, "terms": self.terms, "score": None, "stance": None}


def shipped_lists_dir() -> Path:
    return Path(str(resources.files("alignmix.classifiers") / "blocklists"))


def read_category(path: Path) -> Category:
    stage: str | None = None
    terms: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if match := _STAGE_LINE.match(line):
            stage = match.group(1)
        elif line and not line.startswith("#"):
            terms.append(line)
    if stage not in ("instant", "entity", "second"):
        raise BlocklistError(f"{path}: expected a '# stage: instant|entity|second' line, found {stage!r}")
    if not terms:
        raise BlocklistError(f"{path}: no terms")
    return Category(name=path.stem, stage=stage, terms=tuple(terms))  # type: ignore[arg-type]


def load_categories(lists_dir: Path | None = None, names: list[str] | None = None) -> list[Category]:
    """Read every `*.txt` category in `lists_dir` (default: the shipped lists), or only those named."""
    folder = lists_dir or shipped_lists_dir()
    available = {p.stem: p for p in sorted(folder.glob("*.txt"))}
    wanted = names if names is not None else list(available)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise BlocklistError(f"{folder}: unknown categor(ies) {', '.join(unknown)}; available: {', '.join(available)}")
    return [read_category(available[n]) for n in wanted]


def _inflect_word(word: str) -> set[str]:
    """Regular English inflections of one word: plural / third person, past, gerund."""
    lower = word.lower()
    if len(lower) < 3 or not lower.isalpha():
        return {lower}
    forms = {lower, lower + "s", lower + "ed", lower + "ing"}
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(lower + "es")
    if lower.endswith("e"):
        forms |= {lower + "d", lower[:-1] + "ing"}
    if lower.endswith("y") and lower[-2] not in "aeiou":
        forms |= {lower[:-1] + "ies", lower[:-1] + "ied"}
    if lower[-1] not in "aeiouwxy" and lower[-2] in "aeiou" and lower[-3] not in "aeiou":
        forms |= {lower + lower[-1] + "ed", lower + lower[-1] + "ing"}
    return forms


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def inflections(term: str) -> set[str]:
    """A term and its inflections; in a multi-word term only the first word is inflected (take over, takes over)."""
    words = _normalise(term).split(" ")
    if len(words) == 1:
        return _inflect_word(words[0])
    return {" ".join([form, *words[1:]]) for form in _inflect_word(words[0])} | {" ".join(words)}


def word_pattern(form: str) -> bytes:
    """A case-insensitive whole-word pattern: any run of whitespace between words, boundaries at word ends."""
    body = re.escape(form).replace(r"\ ", r"\s+")
    start = r"\b" if _is_word_char(form[0]) else ""
    end = r"\b" if _is_word_char(form[-1]) else ""
    return f"{start}{body}{end}".encode()


SHIPPED_DIR = Path(__file__).resolve().parent / "blocklists" / "compiled"  # written at install: see ship_default_database


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alignmix" / "hyperscan"


def _database_key(patterns: list[bytes]) -> str:
    return hashlib.sha256(b"\n".join([hyperscan.__version__.encode(), *patterns])).hexdigest()


def _save(database: hyperscan.Database, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(hyperscan.dumpb(database))
    partial.replace(path)


def _compile(patterns: list[bytes]) -> hyperscan.Database:
    database = hyperscan.Database()
    database.compile(
        expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns),
        flags=[hyperscan.HS_FLAG_CASELESS] * len(patterns),
    )
    return database


def compiled_database(patterns: list[bytes]) -> hyperscan.Database:
    """A caseless block-mode database of `patterns`, compiled once and then loaded from a content-addressed cache
    or the database shipped for the default lists (compiling thousands of patterns takes seconds; loading takes
    milliseconds, in every datatrove task)."""
    name = f"{_database_key(patterns)}.hsdb"
    for stored in (cache_dir() / name, SHIPPED_DIR / name):
        if stored.is_file():
            database = hyperscan.loadb(stored.read_bytes(), hyperscan.HS_MODE_BLOCK)
            database.scratch = hyperscan.Scratch(database)
            return database
    database = _compile(patterns)
    _save(database, cache_dir() / name)
    return database


def ship_default_database() -> Path:
    """Compile the shipped lists' database into the package (`SHIPPED_DIR`), where every install finds it: a
    machine's first run then loads it instead of compiling (`make install` does this)."""
    patterns = [word_pattern(form) for form in term_owners(load_categories())]
    path = SHIPPED_DIR / f"{_database_key(patterns)}.hsdb"
    if not path.is_file():
        _save(_compile(patterns), path)
    return path


def term_owners(categories: list[Category]) -> dict[str, list[tuple[str, str]]]:
    """Each term form (a term or an inflection), in a fixed order, and the (category, term) pairs it stands for."""
    owners: dict[str, list[tuple[str, str]]] = {}
    for category in categories:
        for term in category.terms:
            for form in sorted(inflections(term)):  # a fixed order keeps the compiled database's cache key
                owners.setdefault(form, []).append((category.name, term))
    return owners


class Blocklist:
    """One Hyperscan database over every category's terms and their inflections."""

    def __init__(self, categories: list[Category]):
        self.categories = categories
        self._owners = term_owners(categories)
        self._stage = {c.name: c.stage for c in categories}
        self._forms = list(self._owners)
        self._database = compiled_database([word_pattern(form) for form in self._forms])

    @classmethod
    def from_lists(cls, lists_dir: Path | None = None, names: list[str] | None = None) -> Blocklist:
        return cls(load_categories(lists_dir, names))

    def match_terms(self, text: str) -> dict[str, Counter[str]]:
        """Matched terms (as written in the list) per category, with counts."""
        found: dict[str, Counter[str]] = {}
        for form in self._whole_word_matches(text):
            for category, term in self._owners[form]:
                found.setdefault(category, Counter())[term] += 1
        return found

    def _whole_word_matches(self, text: str) -> list[str]:
        """Leftmost-longest, non-overlapping whole-word matches (a match's start is taken as end - len(form))."""
        spans: list[tuple[int, int, int]] = []

        def on_match(form_id: int, start: int, end: int, flags: int, context: object) -> None:
            spans.append((end - len(self._forms[form_id]), -end, form_id))

        self._database.scan(text.encode("utf-8", "replace"), match_event_handler=on_match)
        spans.sort()
        kept, covered_to = [], -1
        for start, negative_end, form_id in spans:
            if start >= covered_to:
                kept.append(self._forms[form_id])
                covered_to = -negative_end
        return kept

    def tag(self, text: str) -> TagResult:
        """Instant categories flag on any hit; second-stage categories only beside an entity term."""
        found = self.match_terms(text)
        has_entity = any(self._stage[c] == "entity" for c in found)
        flagging = [
            c for c in found if self._stage[c] == "instant" or (self._stage[c] == "second" and has_entity)
        ]
        terms: dict[str, int] = {}
        for counts in found.values():  # a term listed in two categories is one match, not two
            for term, count in counts.items():
                terms[term] = max(terms.get(term, 0), count)
        return TagResult(flagged=bool(flagging), categories=sorted(flagging), terms=dict(sorted(terms.items())))
