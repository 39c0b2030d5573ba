"""WebSocket frames as bytes: what dagd writes to its sockets itself, and the frame cache that
builds each event's frame once for every client.

A server's frames are not masked (RFC 6455 section 5.1), so an event's frame is the same bytes
for every client: the fan-out builds it once and writes it to every socket as it is.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from dagd.daemon.api import StoredEvent

#: The close frame's reason is at most 123 bytes (RFC 6455 5.5: a control frame's payload is at
#: most 125 bytes, two of them the code).
MAX_CLOSE_REASON = 123


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 section 5.2) of `payload`
    (UTF-8 bytes, any length)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def close_frame(code: int, reason: str) -> bytes:
    """One unmasked close frame (RFC 6455 5.5.1) with a 2-byte `code` and the reason cut to
    MAX_CLOSE_REASON bytes of UTF-8 (never inside a character)."""
    raw = reason.encode("utf-8")[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    payload = struct.pack("!H", code) + raw
    return bytes((0x88, len(payload))) + payload


def is_close_frame(data: bytes | bytearray | memoryview) -> bool:
    """Does `data` (one write of trio-websocket's: a whole frame, or the handshake's HTTP
    response, which starts with ASCII) start a close frame (FIN set, opcode 8: 0x88)?"""
    return len(data) > 0 and data[0] == 0x88


class FrameCache:
    """Each committed event's text frame, built once for every client that gets it.

    The hub hands one committed batch to every subscriber in turn; the first connection that
    needs an event's frame builds it and the others find it here. `limit` frames are kept
    (oldest dropped first); a frame asked for after that (a client whose queue held the event
    long) is built again, the same bytes.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._limit = limit
        self.built = 0  # frames built so far (the fan-out benchmark and a test read it)
        # The last batch joined, and its bytes: the hub hands the same list to every client
        # that wants all of it, so they share one join (no copy per client).
        self._batch: list[StoredEvent] = []
        self._batch_key = (0, 0, 0)
        self._joined = b""

    def frame(self, event: StoredEvent) -> bytes:
        """The text frame of `event.text` (bytes)."""
        frame = self._frames.get(event.seq)
        if frame is None:
            frame = text_frame(event.text.encode())
            self.built += 1
            frames = self._frames
            frames[event.seq] = frame
            if len(frames) > self._limit:
                frames.popitem(last=False)
        return frame

    def frames(self, events: list[StoredEvent]) -> bytes:
        """The frames of `events` (a non-empty list), in order, as one bytes object ready for
        one socket write."""
        key = (len(events), events[0].seq, events[-1].seq)
        if events is self._batch and key == self._batch_key:
            return self._joined
        if len(events) == 1:
            joined = self.frame(events[0])
        else:
            frame = self.frame
            joined = b"".join([frame(e) for e in events])
        self._batch, self._batch_key, self._joined = events, key, joined
        return joined
