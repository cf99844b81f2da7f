"""litgpt's model configs (`Config`, `name_to_config`) without importing the litgpt package.

`import litgpt.config` runs litgpt's `__init__`, which imports torch and lightning (about 3 s); its config
module itself needs only the standard library and yaml. Recipe checks and `alignmix plan` read configs this
way, so a fully cached rerun does not pay for a training stack it does not use. Where litgpt is already
imported, its own module is used.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any


@functools.cache
def _standalone() -> ModuleType:
    spec = importlib.util.find_spec("litgpt")  # a top-level package: found, not imported
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("litgpt is not installed")
    location = Path(spec.origin).parent / "config.py"
    module_spec = importlib.util.spec_from_file_location("alignmix_litgpt_config", location)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def litgpt_config_module() -> ModuleType:
    return sys.modules.get("litgpt.config") or _standalone()


def config_names() -> dict[str, dict[str, Any]]:
    """litgpt's registered configs by name."""
    return litgpt_config_module().name_to_config


def config_dict(name: str | None = None, /, **fields: Any) -> dict[str, Any]:
    """A full litgpt config as a dict: a registered `name` with field overrides, or `fields` alone."""
    config_class = litgpt_config_module().Config
    return asdict(config_class.from_name(name, **fields) if name else config_class(**fields))


def config_fields() -> list[str]:
    """The field names of litgpt's `Config`."""
    return list(litgpt_config_module().Config.__dataclass_fields__)
