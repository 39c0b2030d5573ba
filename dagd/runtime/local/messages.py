"""The words of a shell step's failure, the same wherever it ran (this machine or a Dask
worker): "exit code 3: <last stderr line>", "killed by SIGKILL", "cannot start 'x': ..."."""

from __future__ import annotations

import os
import signal

from dagd.core.text import printable

#: The longest stderr line quoted in an error, in characters.
MAX_QUOTED_LINE = 500


def exit_error(returncode: int, stderr_tail: bytes) -> str:
    """A finished command's failure: "exit code N" (or "killed by SIGNAME" for a negative
    `returncode`), then ": " and the last non-blank line of `stderr_tail` (bytes), with control
    characters escaped since the text goes to clients and terminals."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        message = f"killed by {name}"
    else:
        message = f"exit code {returncode}"
    lines = [line.strip() for line in stderr_tail.decode("utf-8", "replace").splitlines()]
    last = printable(next((line for line in reversed(lines) if line), "")[:MAX_QUOTED_LINE])
    return f"{message}: {last}" if last else message


def start_error(argv: list[str], cwd: str | None, exc: OSError, where: str = "") -> str:
    """A command that could not start: its working directory `cwd` is missing, or the program
    `argv[0]` cannot run (`exc`'s reason). `where` is added to the missing-folder message
    (e.g. " on the worker")."""
    if cwd is not None and not os.path.isdir(cwd):
        return f"working directory {cwd!r} does not exist{where}"
    return f"cannot start {argv[0]!r}: {exc.strerror or exc}"
