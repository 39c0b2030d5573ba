"""dagd.client's follow_log against a real `dagd serve` process: a step's log live to its end,
resumed after the daemon restarted with no gap and no repeat, a consumer slower than the
daemon, and the errors for what does not exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from clienthelp import await_for, serving

from dagd.client import ClientError, connect
from dagd.core.protocol.answers import LogEndReason


def dags(tmp_path: Path) -> dict[str, str]:
    gate, more = tmp_path / "gate", tmp_path / "more"
    return {
        "logs": f"""
            [steps.talk]
            command = '''
            trap 'cat {more}; exit 1' TERM
            echo "first $DAGD_ATTEMPT"
            echo "to stderr" >&2
            while [ ! -e {gate} ]; do sleep 0.01; done
            cat {more}
            echo last
            '''
            """,
    }


def log_file(root: Path, run_id: str, stream: str = "out") -> bytes:
    return (root / "state" / "logs" / "logs" / run_id / f"talk.1.{stream}").read_bytes()


async def test_follow_live_to_the_end_and_a_slow_consumer(tmp_path: Path) -> None:
    (tmp_path / "more").write_text("".join(f"line {i}\n" for i in range(300_000)))  # ~3 MB
    with serving(tmp_path / "d", dags(tmp_path)) as daemon:
        async with connect(daemon.url, daemon.token, [], max_backoff=1.0) as client:
            run_id = await client.trigger("logs")
            # Not started yet: the latest attempt does not exist.
            with trio.fail_after(10):
                while True:
                    try:
                        follower = client.follow_log(run_id, "talk")
                        first = await follower.__anext__()
                        break
                    except ClientError as exc:
                        assert exc.code == "unknown_attempt"
                        await trio.sleep(0.02)
            assert (first.text, first.offset, follower.attempt) == ("first 1\n", 0, 1)
            async with trio.open_nursery() as nursery:
                err: list[str] = []

                async def follow_err() -> None:
                    async for chunk in client.follow_log(run_id, "talk", 1, stream="err"):
                        err.append(chunk.text)

                nursery.start_soon(follow_err)
                await await_for(lambda: err == ["to stderr\n"])
                (tmp_path / "gate").touch()
            chunks = [first] + [c async for c in follower]
            assert "".join(c.text for c in chunks).encode() == log_file(daemon.root, run_id)
            assert follower.end is not None and follower.end.reason is LogEndReason.COMPLETE
            assert follower.end.offset == len(log_file(daemon.root, run_id))
            assert err == ["to stderr\n"]
            tail = [c.text async for c in client.follow_log(run_id, "talk", tail=5)]
            assert tail == ["last\n"]
            for code, args in [
                ("unknown_run", ("nope", "talk")),
                ("unknown_step", (run_id, "nope")),
                ("unknown_attempt", (run_id, "talk", 2)),
            ]:
                with pytest.raises(ClientError) as exc:
                    await client.follow_log(*args).__anext__()  # type: ignore[arg-type]
                assert exc.value.code == code
            # A consumer that sleeps while the daemon sends more than FOLLOW_BUFFER chunks:
            # the client holds 16 at most, asks the daemon to stop, and follows again from
            # where the consumer is.
            text = []
            async for chunk in client.follow_log(run_id, "talk"):
                text.append(chunk.text)
                if len(text) == 1:
                    await trio.sleep(0.5)
            assert "".join(text).encode() == log_file(daemon.root, run_id)


async def test_resume_after_the_daemon_restarted(tmp_path: Path) -> None:
    """The daemon stops while a step's log is followed (the step writes more as it is
    stopped); the follower reconnects to the restarted daemon and continues from its byte
    offset: the whole file, nothing twice."""
    (tmp_path / "more").write_text("".join(f"bye {i}\n" for i in range(30_000)))
    with serving(tmp_path / "d", dags(tmp_path)) as daemon:
        async with connect(daemon.url, daemon.token, [], max_backoff=0.5) as client:
            run_id = await client.trigger("logs")
            await await_for(lambda: (daemon.root / "state" / "logs" / "logs" / run_id).exists())
            follower = client.follow_log(run_id, "talk", 1)
            first = await follower.__anext__()
            assert first.text == "first 1\n"
            await daemon.astop()  # the step is stopped: its trap writes ~250 KB
            daemon.start()
            await daemon.await_ready()
            rest = [c async for c in follower]
            whole = log_file(daemon.root, run_id)
            assert len(whole) > 200_000
            assert (first.text + "".join(c.text for c in rest)).encode() == whole
            offsets = [first.offset] + [c.offset for c in rest]
            assert offsets == sorted(set(offsets))  # no chunk twice
            assert follower.end is not None and follower.end.reason is LogEndReason.COMPLETE
            assert client.connections == 2
