"""One attempt of a shell step as plain blocking code, run start to finish in one worker thread.

Why a thread per attempt rather than `trio.Process` on the event loop: spawning already needs a
worker thread (fork/exec blocks), and once there, waiting for the child there too costs nothing
while the loop is spared a second hand-off and the Process bookkeeping (bench/shell_steps.py:
500 `true` steps at 0.87-0.92 of bare `trio.run_process`, from 0.60-0.80 before).
The event loop keeps the decisions (shell.py: timeouts, cancellation, the SIGTERM/SIGKILL
escalation); this thread only spawns, copies output and reaps, and it ends as soon as the
step's first process does.

Why pipes and log files created on first output: creating a file on this VM's ext4 costs 20 to
650 µs of CPU depending on where the folder sits, as much as the spawn, and many steps write
nothing to one stream or both (an empty log file tells a user nothing). So the child writes
into two pipes, and this thread creates `<step>.<attempt>.out` / `.err` when the first byte
arrives and appends as output flows: a running step's log can be followed live, and memory
stays at one 64 KiB read per stream.

The price: one thread (mostly asleep in poll) per running shell step, so a thousand concurrent
long steps hold a thousand threads; their number is bounded by the DAGs' `max_active_steps`.

Nothing here imports trio: shell.py runs `ShellAttempt.run` with
`trio.lowlevel.start_thread_soon` and talks to it through two attributes (`pid`, `stopping`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from dagd.runtime.local.outputfiles import take_outputs
from dagd.runtime.local.pipes import copy_until_exit, drain
from dagd.runtime.local.procs import contain, signal_group
from dagd.runtime.logfiles import RETRY_MARKER

_TAIL_SIZE = 4096  # how much of stderr is kept in memory for a failure's message

# Append, never truncate: a run retry numbers attempts onwards, but one restored from a state
# file older than that numbering (or an embedder reusing a run id) can meet an attempt's file
# again, and the earlier output must survive (RETRY_MARKER separates the tries).
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND


def _open_log(path: Path) -> int:
    """Open (and if needed create) a log file and its folder; mark a run retry's output."""
    try:
        fd = os.open(path, _LOG_FLAGS, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, _LOG_FLAGS, 0o644)
    if os.fstat(fd).st_size:
        os.write(fd, RETRY_MARKER)
    return fd


@attrs.define(eq=False)
class _Stream:
    """One output pipe and the log file it is copied to (created on the first byte)."""

    read_fd: int
    path: Path | None  # None: the output is not kept (a precondition's), only its tail
    keep_tail: bool
    log_fd: int | None = None
    tail: bytearray = attrs.field(factory=bytearray)
    error: OSError | None = None

    def copy(self, data: bytes) -> None:
        if self.keep_tail:
            self.tail += data
            del self.tail[:-_TAIL_SIZE]
        if self.error is not None or self.path is None:
            return  # the log cannot be written; keep draining so the child never blocks
        try:
            if self.log_fd is None:
                self.log_fd = _open_log(self.path)
            os.write(self.log_fd, data)
        except OSError as exc:
            # A failed write (ENOSPC, EIO) names no file: give it this stream's, so the
            # step's message says which log lost output.
            if exc.filename is None:
                exc = OSError(exc.errno, exc.strerror or str(exc), str(self.path))
            self.error = exc

    def close(self) -> None:
        os.close(self.read_fd)
        if self.log_fd is not None:
            os.close(self.log_fd)


@attrs.define(eq=False)
class ShellAttempt:
    """Spawn `argv` in its own process group, copy its output to log files, reap it.

    `pid` is set right after the spawn (it is also the process group id); setting `stopping`
    tells the thread that the event loop is stopping the group itself, so the thread must not
    kill leftovers early (the loop grants them `grace` seconds after SIGTERM).
    """

    argv: list[str]
    make_env: Callable[[], Mapping[str, str]]
    cwd: str | None
    # (.out, .err); None: output is discarded; (None, None): discarded but stderr's tail kept
    log_paths: tuple[Path, Path] | tuple[None, None] | None
    on_spawn: Callable[[int], None] | None = None  # called in this thread, right after spawn
    # (DAGD_RUN_ID, DAGD_STEP_ID, DAGD_ATTEMPT): how `contain` knows this attempt's escapees
    ident: tuple[str, str, str] | None = None
    pid: int | None = None
    stopping: bool = False
    hurried: bool = False  # set by the loop: SIGKILL the group as soon as it exists
    stderr_tail: bytes = b""
    log_error: OSError | None = None  # the first failure to write a log file, if any
    # The file named by $DAGD_OUTPUT (None: the attempt has none), read and removed once the
    # step's process ended: its outputs, or why they cannot be taken (dagd/core/outputs.py).
    output_path: str | None = None
    outputs: dict[str, str] | None = None
    output_error: str | None = None

    def run(self) -> int | None:
        """Blocking: the whole attempt. Returns the exit status (negative: killed by that
        signal), or None if `stopping` was set before anything was spawned."""
        if self.stopping:
            return None
        env = self.make_env()
        if self.output_path is not None:
            try:
                return self._run(env)
            finally:
                self._take_outputs(self.output_path)
        return self._run(env)

    def _run(self, env: Mapping[str, str]) -> int:
        if self.log_paths is None:
            popen = self._spawn(env, subprocess.DEVNULL, subprocess.DEVNULL)
            self._started(popen.pid)
            # Wait without reaping: while the exited leader is a zombie its pid cannot be
            # reused, so the group kill below cannot hit a stranger.
            os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
            if not self.stopping:
                signal_group(popen.pid, signal.SIGKILL)  # whatever the step left behind
            return self._contained(popen)
        return self._run_with_logs(env, self.log_paths)

    def _take_outputs(self, path: str) -> None:
        """Read the attempt's output file, if the step wrote one, and remove it (it is read
        after the step's whole process group was killed: nothing writes to it any more)."""
        self.outputs, self.output_error = take_outputs(path)

    def _contained(self, popen: subprocess.Popen[bytes]) -> int:
        """Reap the leader, then (unless the loop is stopping the attempt: it does this
        itself after the grace period) kill what the step left, inside its group or not."""
        returncode = popen.wait()
        if not self.stopping and self.ident is not None:
            contain(popen.pid, self.ident)
        return returncode

    def _spawn(self, env: Mapping[str, str], stdout: int, stderr: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=self.cwd,
            # Its own process group (pgid = pid), so a timeout or cancel reaches every process
            # it started. setpgid rather than setsid: the same kill semantics, cheaper.
            process_group=0,
        )

    def _started(self, pid: int) -> None:
        self.pid = pid
        if self.on_spawn is not None:
            self.on_spawn(pid)
        if self.hurried:  # the loop asked while we were spawning and did not see the pid
            signal_group(pid, signal.SIGKILL)
        elif self.stopping:
            signal_group(pid, signal.SIGTERM)

    def _run_with_logs(
        self, env: Mapping[str, str], paths: tuple[Path, Path] | tuple[None, None]
    ) -> int:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        streams = {
            out_r: _Stream(out_r, paths[0], keep_tail=False),
            err_r: _Stream(err_r, paths[1], keep_tail=True),
        }
        try:
            try:
                popen = self._spawn(env, out_w, err_w)
            finally:
                os.close(out_w)
                os.close(err_w)
            try:
                self._started(popen.pid)
                self._copy_output(popen.pid, streams)
            except BaseException:  # e.g. no file descriptor left for the pidfd
                signal_group(popen.pid, signal.SIGKILL)  # never leave a step unwatched
                popen.wait()
                raise
            return self._contained(popen)
        finally:
            for stream in streams.values():
                stream.close()
            self.stderr_tail = bytes(streams[err_r].tail)
            self.log_error = next((s.error for s in streams.values() if s.error), None)

    def _copy_output(self, pid: int, streams: dict[int, _Stream]) -> None:
        """Copy both pipes into their logs until the step's first process exits (pipes.py:
        a background grandchild may hold the pipes open for much longer)."""
        left_open = copy_until_exit(pid, {fd: stream.copy for fd, stream in streams.items()})
        if not self.stopping:
            # Whatever the step left behind; before draining, so nothing writes any more.
            signal_group(pid, signal.SIGKILL)
        for fd in left_open:
            drain(fd, streams[fd].copy)
