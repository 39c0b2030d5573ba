"""`dagd logs`: a step's output, attempt by attempt, read from the daemon's log files.

As text (each file under a header line, bytes that are not UTF-8 shown as replacement
characters, control characters but tab and newline escaped as in error text, `\\x1b` for
ESC: a step's output never retitles, clears or reprograms the terminal it is read on), or
with `--raw` exactly the bytes the step wrote: stdout then stderr of each
attempt, no headers, binary-safe.
"""

from __future__ import annotations

import codecs
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import BinaryIO

import click

from dagd.cli.completion import complete_run_ids, complete_step_ids
from dagd.cli.options import config_option, load_config
from dagd.core.config import Config
from dagd.core.model import FINISHED_STEP
from dagd.core.text import printable
from dagd.runtime.logfiles import step_logs


@click.command()
@click.argument("run_id", shell_complete=complete_run_ids)
@click.argument("step_id", shell_complete=complete_step_ids)
@click.option("--attempt", type=int, help="Only this attempt (default: all).")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing output as it comes, until the step ends."
)
@click.option(
    "--raw",
    is_flag=True,
    help="Write the bytes exactly as the step wrote them: no headers, no decoding.",
)
@config_option
def logs(
    run_id: str,
    step_id: str,
    attempt: int | None,
    follow: bool,
    raw: bool,
    config_path: Path | None,
) -> None:
    """Print the log of STEP_ID in RUN_ID (stdout then stderr, per attempt).

    Control characters but tab and newline (ESC, CR, BEL, ...) are shown escaped, e.g.
    `\\x1b[31m`, on a terminal and piped alike; --raw writes them as they are.

    \b
    With --raw the output is the step's own bytes (stdout then stderr of each attempt), e.g.
      dagd logs RUN_ID export --raw > export.bin
    """
    print_logs(load_config(config_path), run_id, step_id, attempt, follow, raw=raw)


#: The commands of this module, added to the `dagd` group by dagd/cli/main.py.
COMMANDS: list[click.Command] = [logs]


def print_logs(
    config: Config,
    run_id: str,
    step_id: str,
    attempt: int | None,
    follow: bool = False,
    *,
    raw: bool = False,
) -> None:
    """Print a step's log files (stdout, then stderr) for one or every attempt. A stream that
    wrote nothing has no file; the run history says whether the step ran at all. With
    `follow`, keep printing output as it is written until the step is final: through the
    daemon when one is reachable with this config (dagd/cli/logfollow.py), else from the
    files. With `raw`, write the files' bytes to stdout with no headers (also when following:
    only the files have the exact bytes); notes for people go to stderr.
    Raises click.ClickException for a step or attempt that is not there."""
    by_attempt = step_logs(config.log_dir, run_id, step_id)
    record = _step_record(config, run_id, step_id)  # (status, latest attempt) or None
    made = max([record[1] if record else 0, *by_attempt])  # attempts made
    if follow and not raw and _follow_remote(config, run_id, step_id, attempt):
        return
    if follow and (record is None or record[0] not in FINISHED_STEP):
        if record is None and not made:
            raise click.ClickException(f"no step {step_id!r} in run {run_id!r} to follow")
        _follow_logs(config, run_id, step_id, attempt, raw=raw)
        return
    if not made:
        if record is not None:
            click.echo(f"step {step_id!r} of run {run_id!r} did not run ({record[0]})", err=raw)
            return
        raise click.ClickException(
            f"no step {step_id!r} in run {run_id!r}: no record of it in {config.db_path} and "
            f"no logs under {config.log_dir}"
        )
    if attempt is not None and not 1 <= attempt <= made:
        raise click.ClickException(
            f"no attempt {attempt} of step {step_id!r} in run {run_id!r} (attempts: 1-{made})"
        )
    if raw:
        out = sys.stdout.buffer  # click 8.5 deprecates get_binary_stream
        for n in range(1, made + 1) if attempt is None else [attempt]:
            for path in by_attempt.get(n, []):
                _copy(path, out)
        out.flush()
        return
    for n in range(1, made + 1) if attempt is None else [attempt]:
        paths = by_attempt.get(n, [])
        if not paths:
            click.echo(f"==> attempt {n}: no output <==")
        for path in paths:
            text = printable(path.read_bytes().decode("utf-8", "replace"))
            click.echo(_log_header(n, path))
            click.echo(text, nl=not text.endswith("\n") and bool(text))


def _copy(path: Path, out: BinaryIO) -> None:
    """Copy one log file to `out` in chunks (a log may be larger than memory); a file that
    went away since it was listed (retention) is skipped."""
    try:
        with open(path, "rb") as f:
            shutil.copyfileobj(f, out)
    except FileNotFoundError:
        pass


def _follow_logs(
    config: Config,
    run_id: str,
    step_id: str,
    attempt: int | None,
    poll: float = 0.2,
    *,
    raw: bool = False,
) -> None:
    """`tail -f` over a step's log files, new attempts included, until the step is final (or
    gone from the history); a header line marks each switch to another file (with `raw`, no
    headers, the bytes as they are)."""
    offsets: dict[Path, int] = {}
    # One decoder per file: a read may end inside a UTF-8 sequence that the next one completes.
    decoders: dict[Path, codecs.IncrementalDecoder] = {}
    out = sys.stdout.buffer
    current: Path | None = None
    while True:
        # Read the status first: output written before a final status is then always seen.
        record = _step_record(config, run_id, step_id)
        for n, paths in sorted(step_logs(config.log_dir, run_id, step_id).items()):
            if attempt is not None and n != attempt:
                continue
            for path in paths:
                try:
                    with open(path, "rb") as f:
                        f.seek(offsets.get(path, 0))
                        data = f.read()
                except OSError:
                    continue
                if not data:
                    continue
                offsets[path] = offsets.get(path, 0) + len(data)
                if raw:
                    out.write(data)
                    out.flush()
                    continue
                if path != current:
                    click.echo(_log_header(n, path))
                    current = path
                decoder = decoders.setdefault(path, _utf8_decoder())
                click.echo(printable(decoder.decode(data)), nl=False)
        if record is None or record[0] in FINISHED_STEP:
            for path, decoder in decoders.items():  # a file that ends mid-sequence
                if tail := decoder.decode(b"", final=True):
                    if path != current:
                        click.echo(_log_header(_attempt_of(path), path))
                        current = path
                    click.echo(printable(tail), nl=False)
            return
        time.sleep(poll)


def _follow_remote(config: Config, run_id: str, step_id: str, attempt: int | None) -> bool:
    """`--follow` through the running daemon (follow_log over its WebSocket), which knows at
    once when an attempt ends and reaches logs this machine cannot read. Returns False, having
    printed nothing, when no daemon can be reached with this config (then the files are
    followed directly). Raises click.ClickException for a run, step or attempt the daemon
    does not have."""
    from dagd.cli.remote import resolve_endpoint

    try:
        endpoint = resolve_endpoint(config, None, None)
    except click.ClickException:
        return False  # no token to use: no daemon of this config to ask
    from dagd.cli.logfollow import follow_through_daemon

    return follow_through_daemon(config, endpoint, run_id, step_id, attempt)


def _utf8_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _attempt_of(path: Path) -> int:
    """The attempt number in a log file's name (`<step>.<attempt>.<out|err>`)."""
    return int(path.name.rsplit(".", 2)[1])


def _log_header(attempt: int, path: Path) -> str:
    stream = "stdout" if path.suffix == ".out" else "stderr"
    return f"==> attempt {attempt} {stream} ({path}) <=="


def _step_record(config: Config, run_id: str, step_id: str) -> tuple[str, int] | None:
    """(status, latest attempt number) of a step from the run history, read-only; None when
    there is no history or no such step."""
    if not config.db_path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{config.db_path.as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT status, attempt FROM steps WHERE run_id=? AND step_id=?",
                (run_id, step_id),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return (str(row[0]), int(row[1])) if row else None
