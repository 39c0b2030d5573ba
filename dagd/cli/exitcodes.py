"""The exit codes of every `dagd` command, in one table (docs/cli.md shows the same table).

- 0: success; a run the command ran or waited for succeeded.
- 1: failure: an error (unknown DAG or run, unreachable daemon, refused token, broken DAG
  files, nothing that was asked about could be read), or a run it ran or waited for failed.
- 2: usage error: an unknown option, a missing argument, a malformed value (click's code).
- 130: a run it ran or waited for was cancelled, or the command was interrupted (Ctrl-C).
- 141: stdout was closed early (`dagd runs | head -1`): the command stops quietly, as any
  Unix tool stopped by SIGPIPE.
"""

from __future__ import annotations

from dagd.core.model import RunStatus

EXIT_OK = 0
EXIT_FAILED = 1
#: click's code for usage errors (click.UsageError.exit_code); named here for the table.
EXIT_USAGE = 2
EXIT_CANCELLED = 130
#: 128 + SIGPIPE: what a shell reports for a writer whose reader went away.
EXIT_BROKEN_PIPE = 141


def exit_code_of(status: RunStatus) -> int:
    """The exit code for a run that ended with `status`: 0 success, 130 cancelled, else 1."""
    if status is RunStatus.SUCCESS:
        return EXIT_OK
    return EXIT_CANCELLED if status is RunStatus.CANCELLED else EXIT_FAILED
