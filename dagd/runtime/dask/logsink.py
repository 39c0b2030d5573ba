"""Step output streamed back from Dask workers, written into the daemon's log files.

Workers send output as events on `worker.TOPIC` (worker.py); the Dask client calls
`LogSinks.on_event` for each, on its own event loop thread, and it appends the chunk to the
attempt's file in the daemon's layout (dagd/runtime/logfiles.py), so `dagd logs` and
`dagd logs -f` read remote steps like local ones. As locally, a file is made on the first byte
of its stream, and a file that already has content (a run retried after a restore) gets
`RETRY_MARKER` first.

Writes happen on the client's thread, not trio's: a chunk costs the event loop nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagd.runtime.executor import StepContext
from dagd.runtime.logfiles import RETRY_MARKER, attempt_log

log = logging.getLogger("dagd.runtime.dask")

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND


class AttemptLogs:
    """The log files of one remote attempt, how many chunks have arrived, and its result."""

    def __init__(self, paths: Mapping[str, Path] | None) -> None:
        self.paths = paths  # stream ("out", "err") -> file; None: output is discarded
        self.fds: dict[str, int] = {}
        self.received = 0
        self.result: dict[str, Any] | None = None  # the attempt's result event, once it came
        self.error: OSError | None = None  # the first write that failed
        self.closed = False
        self.lock = threading.Lock()

    def write(self, stream: str, data: bytes) -> None:
        with self.lock:
            if self.closed:  # a chunk after the attempt's end: its result is in
                return
            self.received += 1
            path = None if self.paths is None else self.paths.get(stream)
            if path is None or self.error is not None:
                return
            try:
                fd = self.fds.get(stream)
                if fd is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd = self.fds[stream] = os.open(path, _LOG_FLAGS, 0o644)
                    if os.fstat(fd).st_size:
                        os.write(fd, RETRY_MARKER)
                os.write(fd, data)
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        with self.lock:
            for fd in self.fds.values():
                os.close(fd)
            self.fds.clear()
            self.closed = True


class LogSinks:
    """The attempts whose output is expected, by Dask key."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.sinks: dict[str, AttemptLogs] = {}

    def open(self, key: str, ctx: StepContext) -> AttemptLogs:
        """Expect output for attempt `key` (call before submitting it)."""
        paths = None
        if self.log_dir is not None:
            ids = (ctx.dag_id, ctx.run_id, ctx.step_id, ctx.attempt)
            paths = {
                "out": attempt_log(self.log_dir, *ids, "out"),
                "err": attempt_log(self.log_dir, *ids, "err"),
            }
        sink = self.sinks[key] = AttemptLogs(paths)
        return sink

    def close(self, key: str) -> None:
        """No more output for attempt `key`: close its files."""
        sink = self.sinks.pop(key, None)
        if sink is not None:
            sink.close()

    def on_event(self, event: tuple[float, Any]) -> None:
        """The topic's handler: `event` is (scheduler time, message) with the message
        {"key", "stream", "seq", "data"} (worker.py). Unknown keys (an attempt that has
        ended, another daemon's) and malformed messages are ignored. The result event
        {"key", "result"} comes after the attempt's last output event."""
        msg = event[1]
        if not isinstance(msg, dict):
            return
        sink = self.sinks.get(str(msg.get("key")))
        if sink is None:
            return
        data, result = msg.get("data"), msg.get("result")
        if isinstance(data, bytes):
            sink.write(str(msg.get("stream")), data)
        elif isinstance(result, dict):
            sink.result = result
