"""The `alignmix` command: one Typer app; each module here registers its commands with `register(app)`."""

from __future__ import annotations

import errno

import typer

from alignmix.cli import classifiers, eval, report, run, scenarios, sweep, synth, tag, train
from alignmix.cli.common import report_error
from alignmix.cli.docs_pages import add_docs_epilogs
from alignmix.errors import AlignmixError

app = typer.Typer(
    help="alignmix: measure, control and train on AI discourse in pretraining data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for commands in (run, tag, classifiers, synth, train, eval, report, sweep, scenarios):
    commands.register(app)
add_docs_epilogs(app)


def main() -> None:
    """The `alignmix` command: an alignmix error raised anywhere below a command is one `error:` line, status 2."""
    try:
        app(prog_name="alignmix")
    except AlignmixError as exc:
        report_error(str(exc))
        raise SystemExit(2) from None
    except OSError as exc:  # a read-only run folder or --output: the path and why, not a traceback
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or exc.filename is None:
            raise
        report_error(f"{exc.filename}: {exc.strerror}; give a folder you may write to, or make this one writable")
        raise SystemExit(2) from None
