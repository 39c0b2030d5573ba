"""A piece of one step attempt's log, as the daemon reads it and the wire carries it.

A step attempt writes two logs, its stdout (`"out"`) and its stderr (`"err"`), each one file
of raw bytes (dagd/runtime/logfiles.py). Readers ask for a byte range of one of them and get a
`LogSlice`: the bytes, where they start, how big the file was when read, and whether the
attempt is over (then the file never grows again). Offsets are byte offsets into the raw
file, so a reader resumes exactly where it stopped, whatever the bytes are.

Carried as text (the protocol's `log_chunk`, the dashboard), bytes are decoded as UTF-8 with
U+FFFD for what is not; `text_end` cuts a slice at the last whole UTF-8 sequence, so a
character split across two reads is decoded whole from the next one instead of becoming two
replacement characters.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import attrs

#: A step attempt's two logs: "out" (stdout) and "err" (stderr).
LogStream = Literal["out", "err"]
LOG_STREAMS: Final[tuple[str, ...]] = get_args(LogStream)

#: Most bytes one read of a log returns (and one `log_chunk` carries): 64 KiB keeps a read
#: of a local file short enough for a worker thread and a chunk small on the socket.
MAX_LOG_READ: Final = 64 * 1024


@attrs.frozen
class LogSlice:
    """Bytes `offset` to `offset + len(data)` of one attempt's log `stream`.

    `size` is the file's size in bytes when it was read (0: no file yet, the stream wrote
    nothing so far). `final` says the attempt is over: its log never grows past `size` (read
    as the attempt's status before the file, so no byte written before the end is missed).
    """

    run_id: str
    step_id: str
    attempt: int
    stream: LogStream
    offset: int
    data: bytes
    size: int
    final: bool

    @property
    def next_offset(self) -> int:
        """Where the next read starts: the byte after `data`."""
        return self.offset + len(self.data)

    @property
    def at_end(self) -> bool:
        """The attempt is over and nothing after `next_offset` is left to read."""
        return self.final and self.next_offset >= self.size


def text_end(data: bytes, at_end: bool) -> int:
    """How many bytes of `data` to decode now: all of it if `at_end` (a truncated sequence at
    the very end of a finished log is shown as U+FFFD), else up to (not including) a UTF-8
    sequence that the end of `data` cuts short, which the next read then starts with. At most
    3 bytes are held back; bytes that can never start a valid sequence are not held."""
    n = len(data)
    if at_end or n == 0:
        return n
    # Look back over at most 3 continuation bytes for the lead byte of the last sequence.
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: a lead or an ASCII byte
            if byte >= 0xF0:
                need = 4
            elif byte >= 0xE0:
                need = 3
            elif byte >= 0xC0:
                need = 2
            else:
                return n  # ASCII: the last sequence is whole
            if byte > 0xF4 or byte in (0xC0, 0xC1):
                return n  # never valid UTF-8: nothing to wait for
            return n - back if back < need else n
    return n  # four continuation bytes: not a sequence the next read could complete


def decode(data: bytes) -> str:
    """`data` as text: UTF-8, U+FFFD for each byte (or bad sequence) that is not."""
    return data.decode("utf-8", "replace")
