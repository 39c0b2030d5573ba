"""Experiment, not a fix: bench/ws_fanout.py against a daemon whose WebSocket write path is
monkeypatched at run time (dagd's files are untouched), to measure what a change would buy.

    WS_EXPERIMENT=fast-write   python bench/ws_fanout_experiment.py --clients 1000 --half 1000 \
        --rate 65000 --no-baseline --skip-memory
    WS_EXPERIMENT=direct-write python bench/ws_fanout_experiment.py ...   (same arguments)

fast-write:   `Connection._write` first tries one non-blocking `send` on the socket and only
              falls back to the lock + `fail_after` + `send_all` path for what did not fit.
direct-write: fast-write, plus the fan-out (`Hub.publish`) writes an event batch's frames
              straight to the socket of every connection whose writer is idle (queue empty, not
              mid-write, trio-websocket's lock free), with no task switch; a partial send queues
              the rest for the writer, and busy connections take the normal queue path.

Both reach into trio-websocket's private `_stream`/`_stream_lock` (as dagd's server already
does) and the socket under a plain-TCP stream; a real change would have to keep TLS streams on
the old path. Ordering holds because a direct write happens only while the writer is idle and
nothing is queued, and the fan-out marks a connection busy as soon as it queues for it.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attrs
import trio
import ws_fanout

ws_fanout.__file__ = os.path.abspath(__file__)  # the benchmark's children run this script too
VARIANT = os.environ.get("WS_EXPERIMENT", "direct-write")


@attrs.frozen
class _Raw:
    """Bytes left over from a partial direct send: the writer sends them before anything else."""

    data: bytes


def _raw_socket(ws):  # type: ignore[no-untyped-def]
    return ws._stream.socket._sock  # plain TCP only (an SSLStream has no .socket)


def patch_fast_write() -> None:
    import dagd.server as server

    async def _write(self, data):  # type: ignore[no-untyped-def]
        ws = self.ws
        if ws.closed is not None:
            raise server.ConnectionClosed(ws.closed)
        lock = ws._stream_lock
        if not lock.locked():
            try:
                n = _raw_socket(ws).send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise trio.BrokenResourceError from exc
            if n == len(data):
                return
            data = memoryview(data)[n:]
        async with lock:
            with trio.fail_after(self.server.config.send_timeout):
                await ws._stream.send_all(data)

    server.Connection._write = _write


def patch_direct_write() -> None:
    import dagd.hub as hub
    import dagd.server as server

    async def _writer(self, cancel_scope):  # type: ignore[no-untyped-def]
        receive = self.sub.receive
        sub = self.sub
        sub.conn = self  # from now on the fan-out may write directly while we are idle
        try:
            while True:
                self.idle = True
                try:
                    first = await receive.receive()
                except trio.EndOfChannel:
                    break
                finally:
                    self.idle = False
                batch = [first]
                while len(batch) < 512:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if sub.overflowed:
                    break
                await self._send_batch(batch)
            if sub.overflowed:
                self.server.slow_closed += 1
                await self._close(server.CLOSE_TRY_AGAIN, "slow consumer")
        except (server.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except trio.TooSlowError:
            await self._abort()
        cancel_scope.cancel()

    original_send_batch = server.Connection._send_batch

    async def _send_batch(self, batch):  # type: ignore[no-untyped-def]
        if type(batch[0]) is _Raw:
            out = bytearray()
            while batch and type(batch[0]) is _Raw:
                out += batch.pop(0).data
            await self._write(out)
            if not batch:
                return
        await original_send_batch(self, batch)

    def publish(self, events):  # type: ignore[no-untyped-def]
        for sub in list(self._subscribers):
            wants_all = sub.dag_ids is None
            dag_ids = sub.dag_ids
            conn = getattr(sub, "conn", None)
            if conn is not None:
                ws = conn.ws
                if (
                    conn.idle
                    and ws.closed is None
                    and not sub._send._state.data
                    and not ws._stream_lock.locked()
                ):
                    skip = conn.skip_upto
                    out = b"".join(
                        e.frame
                        for e in events
                        if e.seq > skip and (wants_all or e.dag_id in dag_ids)
                    )
                    if not out:
                        continue
                    try:
                        n = _raw_socket(ws).send(out)
                    except BlockingIOError:
                        n = 0
                    except OSError:
                        n = -1  # let the writer find the error on the normal path
                    if n >= 0:
                        self.delivered += len(events)
                        if n < len(out):
                            conn.idle = False
                            try:
                                sub._send.send_nowait(_Raw(out[n:]))
                            except (trio.WouldBlock, trio.BrokenResourceError):
                                sub.close()
                        continue
                conn.idle = False  # its writer is about to wake: no direct writes until it sleeps
            send = sub._send.send_nowait
            try:
                for stored in events:
                    if wants_all or stored.dag_id in dag_ids:
                        send(stored)
                        self.delivered += 1
            except trio.WouldBlock:
                sub.overflowed = True
                self.dropped_subscribers += 1
                sub.close()
            except trio.BrokenResourceError:
                sub.close()

    server.Connection._writer = _writer
    server.Connection._send_batch = _send_batch
    hub.Hub.publish = publish


if __name__ == "__main__":
    if "--role" in sys.argv and sys.argv[sys.argv.index("--role") + 1] == "dagd":
        if VARIANT not in ("fast-write", "direct-write"):
            raise SystemExit(f"WS_EXPERIMENT must be fast-write or direct-write, not {VARIANT!r}")
        patch_fast_write()
        if VARIANT == "direct-write":
            patch_direct_write()
    elif "--role" not in sys.argv:
        print(f"experiment: {VARIANT} (dagd patched at run time)", flush=True)
    ws_fanout.main()
