"""Paths in a recipe: relative ones resolve against the file that wrote them (an `extends`ed recipe's own folder,
the current folder for `--set` and `${ENV}`), checked to exist where a plan needs them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, ValidationInfo


class Anchored(str):
    """A string from a recipe that another one `extends`: relative paths in it resolve against that file's folder."""

    base_dir: Path

    def __new__(cls, value: str, base_dir: Path) -> Anchored:
        anchored = super().__new__(cls, value)
        anchored.base_dir = base_dir
        return anchored

    def __reduce__(self) -> tuple[type[str], tuple[str]]:  # copies and pickles are plain strings
        return str, (str(self),)


yaml.SafeDumper.add_representer(Anchored, lambda dumper, value: dumper.represent_str(str(value)))


def anchor(data: Any, base_dir: Path) -> Any:
    """Every string value in `data` (not keys; strings already anchored kept) anchored to `base_dir`."""
    if isinstance(data, dict):
        return {key: anchor(value, base_dir) for key, value in data.items()}
    if isinstance(data, list):
        return [anchor(value, base_dir) for value in data]
    return Anchored(data, base_dir) if isinstance(data, str) and not isinstance(data, Anchored) else data


def _from_writing_file(value: Any) -> Any:
    """A relative path written in an extended recipe, made absolute against that recipe's folder."""
    if isinstance(value, Anchored) and not value.startswith("builtin:") and not Path(value).is_absolute():
        return str(value.base_dir / value)
    return value


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = Path((info.context or {}).get("base_dir", "."))
    return (path if path.is_absolute() else (base / path)).resolve()


def _resolve_existing(path: Path, info: ValidationInfo) -> Path:
    resolved = _resolve(path, info)
    if not resolved.exists():
        raise ValueError(f"path does not exist: {resolved}")
    return resolved


ExistingPath = Annotated[Path, BeforeValidator(_from_writing_file), AfterValidator(_resolve_existing)]
# A path needed only to run, not to plan (checked by `alignmix run` before any work).
RunPath = Annotated[Path, BeforeValidator(_from_writing_file), AfterValidator(_resolve)]


def _resolve_scenarios(spec: str, info: ValidationInfo) -> str:
    from alignmix.scenarios import ScenarioError, resolve_spec

    if spec.startswith("builtin:"):
        try:
            resolve_spec(spec)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        return spec
    return str(_resolve_existing(Path(spec), info))


ScenarioSpec = Annotated[str, BeforeValidator(_from_writing_file), AfterValidator(_resolve_scenarios)]

def _resolve_base(spec: str, info: ValidationInfo) -> str:
    return spec if spec.startswith("builtin:") else str(_resolve_existing(Path(spec), info))

# A released model: `builtin:NAME`, or a folder or file that exists.
BuiltinOrExistingPath = Annotated[str, BeforeValidator(_from_writing_file), AfterValidator(_resolve_base)]
