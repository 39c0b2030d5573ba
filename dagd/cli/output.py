"""How `dagd` commands print: `--json` documents in the protocol module's shapes, plain text,
and what happens when the reader of stdout goes away.

With `--json` a command prints exactly one JSON document on stdout and nothing else there;
messages for people go to stderr. Text is never wrapped when stdout is not a terminal: a
long error message stays on one line in a log or a pipe.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from dagd.cli.exitcodes import EXIT_BROKEN_PIPE

if TYPE_CHECKING:
    from rich.console import Console

    from dagd.core.spec import Problem

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document (the protocol's shapes, docs/cli.md) and nothing else.",
)


def print_json(value: Any) -> None:
    """Write `value` (a protocol class, an attrs record, or plain JSON-able data holding them)
    to stdout as one JSON document and a newline, unstructured by the protocol's converter:
    camelCase keys, times as ISO 8601 UTC text."""
    # Imported here: building the converter costs ~50 ms that every other `dagd` start
    # (and every shell Tab) would pay for nothing.
    from dagd.core.protocol.converter import converter
    from dagd.core.protocol.wire import dumps

    sys.stdout.write(dumps(converter.unstructure(value)) + "\n")
    sys.stdout.flush()


def problem_json(problem: Problem) -> dict[str, str | None]:
    """A DAG file problem as `{"file", "step", "field", "message"}` (step and field null
    when they do not apply)."""
    return {
        "file": problem.file,
        "step": problem.step,
        "field": problem.field,
        "message": problem.message,
    }


def make_console(*, stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr) that never hard-wraps when it is not a terminal
    (rich would wrap at 80 columns) and never colours what it does not recognise."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, soft_wrap=not stream.isatty(), highlight=False)


def _broken_pipe(exc: BaseException) -> bool:
    """`exc` is a BrokenPipeError, or an exception group holding only such errors (trio's
    nurseries wrap what their tasks raise)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_broken_pipe(inner) for inner in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


@contextlib.contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """Exit with 141 and no traceback when stdout's reader went away (`dagd runs | head -1`).

    stdout is pointed at /dev/null first, so that the interpreter's final flush of what is
    still buffered cannot fail a second time (Python's documented recipe, see the `signal`
    module's "Note on SIGPIPE")."""
    try:
        yield
    except BaseException as exc:
        if not _broken_pipe(exc):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)
