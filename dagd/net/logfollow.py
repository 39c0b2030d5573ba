"""Following one attempt's log for one WebSocket client (`follow_log`), paced at the source.

Rules this file keeps:
- Backpressure at the source, not a buffer: a follow reads its next chunk (at most
  MAX_LOG_READ bytes) only once its previous chunk is on the socket. A follow therefore holds
  at most one chunk in memory and never drops a byte the client is owed.
- Logs never crowd out events: the follows of a connection take turns (`FollowHost.log_turn`,
  a fair lock), so at most one chunk is on its way to the socket at a time, and only while
  the client's queue is less than half full and nothing waits for the kernel to take it. The
  queue that closes a client as too slow for events (1013) never fills with log chunks, and
  the writer never waits on the socket for more than one chunk of log (docs/protocol.md,
  *Flow control*).
- Live output is found by polling (`POLL_INTERVAL`, as `tail -f` does): the daemon's log
  writers are worker threads and Dask callbacks that tell the event loop nothing per byte.
- Chunks are contiguous: each starts at the byte the one before it ended at, cut only at a
  whole UTF-8 sequence (dagd/core/logslice.py), so a client resumes by byte offset with no
  gap and no repeat.
- A follow ends with exactly one `log_end` (complete, deleted, unreadable), or silently when
  `unfollow_log` stopped it or the connection went away.
"""

from __future__ import annotations

from typing import Protocol

import trio

from dagd.core.logslice import LogSlice, LogStream, decode, text_end
from dagd.core.protocol.answers import LogChunk, LogEnd, LogEndReason
from dagd.core.protocol.codec import encode
from dagd.daemon.api import DaemonError, DaemonService
from dagd.net.frames import text_frame

#: Seconds between two looks for new bytes of a log that has none right now.
POLL_INTERVAL = 0.2
#: Seconds between two looks for room in a client's queue that is half full.
ROOM_INTERVAL = 0.05

#: (run id, step id, attempt, stream): one followed log.
FollowKey = tuple[str, str, int, LogStream]


class FollowHost(Protocol):
    """What a follow needs of its connection (dagd.net.connection.Connection)."""

    daemon: DaemonService
    log_turn: trio.Lock  # held by the one follow whose chunk is on its way

    def log_room(self) -> bool:
        """Is the client's queue empty enough for a log chunk, and the socket idle?"""
        ...

    def queue_log_chunk(self, frame: bytes) -> trio.Event:
        """Queue a chunk's frame; the event is set once it is written to the socket."""
        ...

    def end_follow(self, follow: LogFollow, end: LogEnd) -> None:
        """The follow is over: forget it and queue `end`."""
        ...


class LogFollow:
    """One followed log of one connection, from `offset` on. `run` sends it; `stop` ends it
    without a `log_end` (unfollow_log)."""

    def __init__(self, key: FollowKey, offset: int) -> None:
        self.key = key
        self.offset = offset  # the next byte the client is owed
        self.scope = trio.CancelScope()
        self.seen_size = 0  # the largest size of the file seen so far

    def stop(self) -> None:
        """End the follow now: nothing more of it is queued after this call returns."""
        self.scope.cancel()

    async def run(self, host: FollowHost, first: LogSlice) -> None:
        """Send the log from `first` (the read that started the follow) until it is over."""
        run_id, step_id, attempt, stream = self.key
        with self.scope:
            piece = first
            while True:
                if piece.size < self.seen_size:
                    # The file shrank or went: history retention moved the run's log folder
                    # away between the daemon's look at the run and this read.
                    self._end(host, LogEndReason.DELETED, "the run's logs were deleted")
                    return
                self.seen_size = piece.size
                n = text_end(piece.data, piece.at_end)
                if n:
                    chunk = LogChunk(
                        run_id,
                        step_id,
                        attempt,
                        stream,
                        self.offset,
                        self.offset + n,
                        decode(piece.data[:n]),
                    )
                    frame = text_frame(encode(chunk).encode())
                    async with host.log_turn:
                        while not host.log_room():
                            await trio.sleep(ROOM_INTERVAL)
                        written = host.queue_log_chunk(frame)
                        self.offset += n
                        await written.wait()
                if piece.at_end and n == len(piece.data):
                    self._end(host, LogEndReason.COMPLETE, None)
                    return
                if n == 0 or piece.next_offset >= piece.size:
                    await trio.sleep(POLL_INTERVAL)  # caught up: wait for more
                try:
                    piece = await host.daemon.read_log(
                        run_id, step_id, attempt, stream, self.offset
                    )
                except DaemonError as exc:
                    if exc.code == "unknown_run":
                        message = f"history retention deleted run {run_id!r} and its logs"
                        self._end(host, LogEndReason.DELETED, message)
                    else:
                        self._end(host, LogEndReason.UNREADABLE, exc.message)
                    return

    def _end(self, host: FollowHost, reason: LogEndReason, message: str | None) -> None:
        run_id, step_id, attempt, stream = self.key
        host.end_follow(
            self, LogEnd(run_id, step_id, attempt, stream, self.offset, reason, message)
        )
