"""The byte stream dagd puts under each WebSocket (dagd/net/stream.py) and the frames it writes
(dagd/net/frames.py): ordering of direct writes and trio-websocket's own, the close frame of a
connection the library failed, and each event's frame built once for every client."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
import trio
from wshelp import Aio, harness, publish_committed

from dagd.core.events import ErrorEvent
from dagd.daemon.api import StoredEvent
from dagd.net.frames import FrameCache, close_frame, is_close_frame, text_frame
from dagd.net.stream import ConnectionStream


@pytest.fixture
def aio():
    loop = Aio()
    yield loop
    loop.close()


def stream_pair() -> tuple[ConnectionStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return ConnectionStream(trio.SocketStream(a)), trio.SocketStream(b)


async def read_exactly(peer: trio.SocketStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await peer.receive_some(65536)
        assert chunk, "the stream closed early"
        data += chunk
    return bytes(data)


async def test_an_idle_stream_writes_at_once_without_a_checkpoint() -> None:
    stream, peer = stream_pair()
    async with stream, peer:
        assert stream.idle()
        assert stream.write_nowait(b"hello")  # all of it on the socket, no await
        assert await read_exactly(peer, 5) == b"hello"


async def test_library_writes_queue_behind_what_the_kernel_did_not_take() -> None:
    # A pong (trio-websocket's send_all) must never land inside a frame dagd wrote directly.
    stream, peer = stream_pair()
    async with stream, peer:
        big = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers take
        assert not stream.write_nowait(big)
        assert stream.pending and not stream.idle()
        pong = b"\x8a\x00"
        received = b""

        async def read_all() -> None:
            nonlocal received
            received = await read_exactly(peer, len(big) + len(pong) + 4)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await stream.send_all(pong)  # flushes what was pending first
            stream.write_nowait(b"tail")
            await stream.flush()
        assert received == big + pong + b"tail"
        assert stream.idle()


async def test_closing_a_connection_the_library_failed_writes_its_close_frame() -> None:
    stream, peer = stream_pair()
    async with stream, peer:
        stream.close_reason = lambda: (1007, "invalid UTF-8")
        await stream.aclose()
        data = await read_exactly(peer, 2)
        data += await peer.receive_some(1024)
        assert data == close_frame(1007, "invalid UTF-8")
        assert struct.unpack("!H", data[2:4]) == (1007,)
        assert await peer.receive_some(1024) == b""  # then the TCP connection ends


@pytest.mark.parametrize("code", [1000, 1002])
async def test_no_second_close_frame(code: int) -> None:
    # A close frame the library wrote itself (a normal close, or the answer to a peer's 1002)
    # is the only one; a normal close code never gets one from the stream.
    stream, peer = stream_pair()
    async with stream, peer:
        stream.close_reason = lambda: (code, "")
        await stream.send_all(close_frame(code, ""))
        await stream.aclose()
        data = b""
        while chunk := await peer.receive_some(1024):
            data += chunk
        assert data == close_frame(code, "")


def test_frames() -> None:
    for n, header in [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e")]:
        assert text_frame(b"x" * n) == header + b"x" * n
    assert text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + struct.pack("!Q", 65536)
    frame = close_frame(1008, "é" * 100)  # 200 bytes of reason: cut, never inside a character
    assert frame[0] == 0x88 and frame[1] == len(frame) - 2 <= 125
    assert frame[4:].decode() == "é" * 61
    assert is_close_frame(frame) and not is_close_frame(b"HTTP/1.1 101 Switching Protocols")


def test_frame_cache_builds_each_frame_once() -> None:
    cache = FrameCache(limit=2)
    events = [
        StoredEvent(seq, "d", ErrorEvent("d", None, None, "e", 1.0, seq=seq), f'{{"n":{seq}}}')
        for seq in (1, 2, 3)
    ]
    joined = cache.frames(events)
    assert joined == b"".join(text_frame(e.text.encode()) for e in events)
    assert cache.frames(events) is joined  # the next client of the same batch: no new join
    assert cache.frames(events[1:]) == joined[len(text_frame(events[0].text.encode())) :]
    assert cache.built == 3
    assert cache.frame(events[0]) == text_frame(events[0].text.encode())  # dropped: rebuilt
    assert cache.built == 4


async def test_each_event_frame_is_built_once_for_every_client(tmp_path: Path, aio: Aio) -> None:
    async with harness(tmp_path, aio) as h:
        clients = [await h.connect(kind) for kind in ("trio", "trio", "asyncio", "asyncio")]
        for client in clients:
            await client.request({"type": "subscribe", "dagIds": ["*"]})
        before = h.server.frames.built
        seqs = await publish_committed(h.daemon, "a", 20)
        for client in clients:
            got = [(await client.recv())["seq"] for _ in seqs]
            assert got == seqs
        assert h.server.frames.built - before == len(seqs)
