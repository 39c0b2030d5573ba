"""A backfill's slots are computed in a worker thread: up to 1000 cron searches take up to
about 0.1 s (a sparse expression such as `0 0 13 * 5`), which must not hold up the loop."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from daemonhelp import daemon_config, write_dag_file

import dagd.daemon.daemon as daemon_module
from dagd.app import open_daemon
from dagd.core.cron import Schedule

SPARSE = 'schedule = "0 0 13 * 5"\n[steps.s]\ncall = "builtins:len"\n'


async def test_slots_are_computed_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = daemon_config(tmp_path, reload_interval=10)
    write_dag_file(config.dags_dir, "sparse", SPARSE)
    threads: list[int] = []
    compute = daemon_module.backfill_slots

    def recording(schedule: Schedule, start: datetime, end: datetime, limit: int) -> Any:
        threads.append(threading.get_ident())
        return compute(schedule, start, end, limit)

    monkeypatch.setattr(daemon_module, "backfill_slots", recording)
    async with open_daemon(config) as daemon:
        result = await daemon.backfill("sparse", "2000-01-01", "2009-12-31", dry_run=True)
        assert len(result.slots) == 624  # every 13th and every Friday (cron ORs the two)
        assert threads and threads[0] != threading.get_ident()
