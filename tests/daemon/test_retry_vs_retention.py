"""End to end through the daemon: a retry that races a history-retention batch deleting its
run is refused as unknown_run, and no bare runs row comes back (tests/daemon/test_prune_races.py
has the store's side)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from test_prune_races import call_inside_delete, runs_row
from test_retention import wait_finished
from wshelp import make_config, running

from dagd.core.config import HistoryConfig
from dagd.daemon.errors import DaemonError


async def test_the_daemon_refuses_a_retry_of_a_run_deleted_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed run is retried while a retention batch deletes it: the retry read the run
    from memory before the delete and queued its requeue during it. It is refused as
    unknown_run, no bare row comes back, and the daemon forgets the run."""
    config = attrs.evolve(make_config(tmp_path), history=HistoryConfig(keep_runs=1))
    async with running(tmp_path, config=config) as daemon:
        run_id = await daemon.trigger("failing")
        await wait_finished(daemon.store, run_id)
        outcome: list[BaseException | str] = []

        async def retry() -> None:
            try:
                outcome.append(await daemon.retry(run_id))
            except DaemonError as exc:
                outcome.append(exc)

        async def arrive() -> None:
            daemon._nursery.start_soon(retry)  # type: ignore[union-attr]
            await trio.testing.wait_all_tasks_blocked()  # it waits for its commit now

        call_inside_delete(daemon.store, monkeypatch).append(arrive)
        deleted = await daemon.store.delete_runs([run_id])
        daemon._forget([r for _, r in deleted.runs])
        with trio.fail_after(10):
            while not outcome:
                await trio.sleep(0.01)
        [refused] = outcome
        assert isinstance(refused, DaemonError) and refused.code == "unknown_run"
        await daemon.store.flush()
        assert await daemon.store.get_run(run_id) is None
        with pytest.raises(DaemonError) as again:
            await daemon.retry(run_id)
        assert again.value.code == "unknown_run"
    assert runs_row(config.db_path, run_id) == []
