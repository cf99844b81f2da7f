"""What every recipe section shares: the strict model base, identifiers, errors naming a key, and the key policy
(which settings enter which stage's key)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from alignmix.errors import AlignmixError

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]


class KeyedError(ValueError):
    """A check across several recipe keys, raised in a validator: names the key it concerns (the validator's own
    location would be the mapping that holds them all)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class RecipeError(AlignmixError):
    """A recipe that cannot be run: the message names the file and the key path."""


class Strict(BaseModel):
    """A recipe section: unknown keys refused, frozen, and each field documented by its attribute docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,  # .inf and .nan: never a setting
                              use_attribute_docstrings=True)


NOT_IN_KEY = {"in_key": False}  # a field saying how a job is transported or placed, not what it computes


def only_in_key_of(stage: str) -> dict[str, Any]:
    """Declares a field that only `stage`'s key holds (`Field(json_schema_extra=only_in_key_of("train"))`): the
    other stages that key the same model see it through that stage's output digest, or do not depend on it."""
    return {"in_key": stage}


def key_settings(model: BaseModel, stage: str) -> dict[str, Any]:
    """A model's settings as JSON for `stage`'s key: every field but those declared `NOT_IN_KEY` and those declared
    `only_in_key_of` another stage, in nested models and lists of them too."""
    return _keyed(model, model.model_dump(mode="json"), stage)


def _keyed(model: BaseModel, dumped: dict[str, Any], stage: str) -> dict[str, Any]:
    for name, info in type(model).model_fields.items():
        declared = info.json_schema_extra
        if isinstance(declared, dict) and declared.get("in_key", stage) != stage:
            dumped.pop(name, None)
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _keyed(value, dumped[name], stage)
        elif isinstance(value, list):
            for item, item_dump in zip(value, dumped[name]):
                if isinstance(item, BaseModel):
                    _keyed(item, item_dump, stage)
    return dumped
