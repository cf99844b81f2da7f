"""Send this process's stderr, and its children's, to a log file for the length of a block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def stderr_to(log_file: Path) -> Iterator[None]:
    """Library logging (datatrove's loguru, litgpt, tracebacks a library prints) goes to `log_file`, appended."""
    saved = os.dup(2)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
