"""The one error type alignmix raises for what a user can fix: a bad recipe, input, model, plan or server.

Every alignmix error class derives from `AlignmixError`; the CLI turns any of them into one `error:` line
(the traceback stays in the stage's or tool's log), and the stage runner wraps one raised inside a stage
with the stage's name and log.
"""

from __future__ import annotations


class AlignmixError(ValueError):
    """A problem alignmix explains in its message: what was wrong, where, and what was expected."""
