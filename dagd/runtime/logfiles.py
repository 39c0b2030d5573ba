"""The step-log layout, for the executors that write logs and the `dagd logs` command that reads
them: `<log_dir>/<dag>/<run>/<step>.<attempt>.<out|err>`.

One file per attempt and stream, made on the first byte of output (a stream that wrote nothing
has no file). Attempt numbers go on across retries of a run, so no two attempts share a file.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from pathlib import Path
from typing import Literal

Stream = Literal["out", "err"]

#: Written into a log file that already has content before an attempt's output is appended (a
#: run retried after a restore from an older state file, or an embedder reusing a run id):
#: the earlier output survives, and this line separates the tries. Every writer of the
#: layout (the local executor, the Dask executor's log sink) writes the same marker.
RETRY_MARKER = b"\n==> dagd: the run was retried; this attempt's output follows <==\n"


def attempt_log(
    log_dir: Path, dag_id: str, run_id: str, step_id: str, attempt: int, stream: Stream
) -> Path:
    """The log file of one stream ("out": stdout, "err": stderr) of one attempt (1-based)."""
    return log_dir / dag_id / run_id / f"{step_id}.{attempt}.{stream}"


def step_logs(log_dir: Path, run_id: str, step_id: str) -> dict[int, list[Path]]:
    """The log files of every attempt of a step (of whichever DAG has run `run_id`) that exist
    now, by attempt number; each attempt's stdout before its stderr. Empty when there are none
    (the step wrote no output, never ran, or `log_dir` does not exist)."""
    pattern = f"*/{glob.escape(run_id)}/{glob.escape(step_id)}.*"
    by_attempt: dict[int, list[Path]] = {}
    for path in sorted(log_dir.glob(pattern)):
        # Step ids may contain dots: "load.*" also matches the logs of a step "load.more".
        parts = path.name.rsplit(".", 2)
        if len(parts) == 3 and parts[0] == step_id and parts[1].isdigit():
            by_attempt.setdefault(int(parts[1]), []).append(path)
    for paths in by_attempt.values():
        paths.sort(key=lambda p: p.suffix != ".out")  # stdout, then stderr
    return by_attempt


def run_logs(log_dir: Path, dag_id: str, run_id: str) -> Path:
    """The folder holding every log file of one run: `<log_dir>/<dag>/<run>`. Raises
    ValueError for an id that is not one plain path component (empty, ".", "..", or with a
    "/" or NUL), so no caller can reach outside `log_dir` through it."""
    for name in (dag_id, run_id):
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise ValueError(f"{name!r} is not a DAG or run id a log folder can have")
    return log_dir / dag_id / run_id


def read_range(path: Path, offset: int, length: int) -> tuple[bytes, int] | None:
    """Blocking: up to `length` bytes of `path` from byte `offset`, and the file's size when
    read (the size first, then the bytes: a file that grows meanwhile gives at most `size -
    offset` of them, never a byte past the size it reports). None if there is no regular file
    there (a FIFO or a folder put in its place is never opened for reading, so a read never
    blocks on one). For a worker thread: a log may sit on a slow disk."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink in the log's place
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if offset >= st.st_size or length <= 0:
            return b"", st.st_size
        return os.pread(fd, min(length, st.st_size - offset), offset), st.st_size
    finally:
        os.close(fd)
