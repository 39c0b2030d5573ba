"""A real full disk: a small tmpfs under the state folder (or the step logs), filled until
writes fail, then freed. Mounting needs root (CI runs as root); elsewhere these skip, and
tests/daemon/test_storage_faults.py covers the same behaviour with an injected failing writer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import mounts
import pytest
import trio
from clienthelp import DaemonProc
from test_storage_start import assert_one_line, serve_once
from wshelp import trio_client

from dagd.core.model import StepSpec
from dagd.runtime.executor import StepContext
from dagd.runtime.local.executor import LocalExecutor
from dagd.runtime.local.shellthread import ShellAttempt

# A run whose events come after a second (the disk is full by then), plenty of them.
MANY = '[steps.wait]\ncommand = "sleep 1"\n' + "\n".join(
    f'[steps.s{i}]\ncommand = "true"\ndepends_on = ["wait"]\n' for i in range(60)
)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` (made if needed), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these as root)")
    with mounts.tmpfs(folder, f"size={size}", refused="mount -t tmpfs was refused"):
        yield folder


def fill(folder: Path) -> Path:
    """Write a file in `folder` until the disk is full; returns it (delete it to free space)."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)
    with pytest.raises(OSError) as full, open(folder / "probe", "wb", buffering=0) as probe:
        probe.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def test_a_full_disk_at_start_is_one_line(tmp_path: Path) -> None:
    proc = DaemonProc(tmp_path, {"quick": '[steps.one]\ncommand = "true"\n'})
    with tmpfs(proc.state, "256k"):
        fill(proc.state)
        try:
            code, lines = serve_once(proc)
        finally:
            proc.close()
    assert_one_line(code, lines, proc.db, "cannot be written", "free space")


async def test_a_full_disk_while_running_holds_events_until_space_returns(
    tmp_path: Path,
) -> None:
    """The daemon outlives a full disk (it used to die a second after a run, from its
    checkpoint, and its clients got 1006); the WebSocket client stays connected, a trigger is
    refused with storage_unavailable, and once space returns the held events arrive in seq
    order with no gap and triggers work again."""
    proc = DaemonProc(tmp_path, {"many": MANY, "quick": '[steps.one]\ncommand = "true"\n'})
    with tmpfs(proc.state, "4m"):
        try:
            proc.start()
            await proc.await_ready()
            async with trio.open_nursery() as nursery:
                client = await trio_client(nursery, proc.url, proc.token)
                answer = await client.request({"type": "subscribe", "dagIds": ["*"]})
                assert answer["type"] == "subscribed"
                seqs: list[int] = []
                answer = await client.request({"type": "trigger", "dagId": "many"})
                assert answer["type"] == "triggered", answer
                runs = 1
                filler = fill(proc.state)
                with trio.fail_after(30):
                    while "cannot write the state file" not in proc.output():
                        await trio.sleep(0.5)
                        if "cannot write the state file" in proc.output():
                            break
                        answer = await client.request({"type": "trigger", "dagId": "many"})
                        runs += answer["type"] == "triggered"
                await trio.sleep(2)  # the checkpointer's turn comes and goes: no crash
                assert proc.proc is not None and proc.proc.poll() is None, proc.output()
                answer = await client.request({"type": "trigger", "dagId": "quick"})
                assert answer.get("code") == "storage_unavailable", answer
                assert str(proc.db) in answer["message"]
                assert (await client.request({"type": "ping"}))["type"] == "pong"
                while client.held:
                    seqs.append(client.held.pop(0)["seq"])
                filler.unlink()
                finished = 0
                with trio.fail_after(30):
                    while finished < runs:
                        frame = await client.recv(timeout=30)
                        if "seq" in frame:
                            seqs.append(frame["seq"])
                            if frame["type"] == "dag_run_status" and frame["data"]["status"] in {
                                "success",
                                "failed",
                            }:
                                finished += 1
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
                answer = await client.request({"type": "trigger", "dagId": "quick"})
                assert answer["type"] == "triggered", answer
                nursery.cancel_scope.cancel()
            assert await proc.astop(signal.SIGTERM) == 0
            stored = proc.query("SELECT count(*), min(seq), max(seq) FROM events")[0]
            assert stored[0] == stored[2] - stored[1] + 1  # nothing lost, no gap
            statuses = set(proc.run_statuses("many").values())
            assert statuses == {"success"}
        finally:
            proc.close()


async def test_lost_step_output_names_its_log_file(tmp_path: Path) -> None:
    """A log write on a full disk: the step's error says which file lost output (it used to
    say `cannot write None`)."""
    logs = tmp_path / "logs"
    with tmpfs(logs, "64k"):
        fill(logs)
        executor = LocalExecutor(log_dir=logs, grace=0.3)
        step = StepSpec("s", command="echo some output; echo oops >&2; exit 3")
        result = await executor.run(step, StepContext("d", "r", "s", 1, {}))
    assert not result.ok
    assert result.error is not None
    assert "exit code 3: oops (output lost, cannot write " in result.error
    assert str(logs / "d" / "r") in result.error and "None" not in result.error
    assert "No space left on device" in result.error


def test_a_failed_log_write_names_the_file_without_root() -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    attempt = ShellAttempt(
        ["/bin/sh", "-c", "echo out; echo err >&2"],
        lambda: dict(os.environ),
        None,
        (Path("/dev/full"), Path("/dev/full")),
    )
    assert attempt.run() == 0
    assert attempt.log_error is not None
    assert attempt.log_error.filename == "/dev/full"
    assert attempt.log_error.errno == errno.ENOSPC
