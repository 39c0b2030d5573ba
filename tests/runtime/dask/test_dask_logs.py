"""A step on the Dask executor followed live through the daemon (`follow_log`): its output is
streamed back into the daemon's log files (dagd/runtime/dask/logsink.py), and the follow ends
once the attempt is over, as for a local step."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from clienthelp import await_for, serving
from conftest import NEEDS_DASK

pytest.importorskip("distributed", reason=NEEDS_DASK)

from distributed import LocalCluster

from dagd.client import ClientError, connect
from dagd.core.protocol.answers import LogEndReason


async def test_follow_a_dask_step_live(dask_cluster: LocalCluster, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    dags = {
        "remote": f"""
            [steps.talk]
            executor = "dask"
            command = '''
            echo "first on the cluster"
            while [ ! -e {gate} ]; do sleep 0.01; done
            echo "second"
            '''
            """,
    }
    top = f'[executors.dask]\naddress = "{dask_cluster.scheduler_address}"\n'
    with serving(tmp_path / "d", dags, top=top) as daemon:
        async with connect(daemon.url, daemon.token, [], max_backoff=1.0) as client:
            run_id = await client.trigger("remote")
            with trio.fail_after(20):
                while True:  # until the attempt started on a worker
                    try:
                        follower = client.follow_log(run_id, "talk")
                        first = await follower.__anext__()
                        break
                    except ClientError as exc:
                        assert exc.code == "unknown_attempt"
                        await trio.sleep(0.05)
            assert first.text == "first on the cluster\n"
            assert daemon.run_statuses()[run_id] == "running"
            gate.touch()
            rest = [chunk.text async for chunk in follower]
            assert rest == ["second\n"]
            assert follower.end is not None and follower.end.reason is LogEndReason.COMPLETE
            await await_for(lambda: daemon.run_statuses()[run_id] == "success")
