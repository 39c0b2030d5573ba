"""get_run and a run's stored definition: parsed at most once per version (a small LRU), in
a worker thread, and never for a run in memory (its live DagSpec is its definition)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from daemonhelp import daemon_config, wait_status, write_dag_file

import dagd.daemon.daemon as daemon_module
from dagd.app import open_daemon
from dagd.core.dagsnapshot import dag_from_json
from dagd.core.model import DagSpec


def dag(marker: str) -> str:
    steps = f'[steps.a]\ncommand = "true {marker}"\n'
    return steps + '[steps.b]\ncommand = "true"\ndepends_on = ["a"]\n'


class Parses:
    """dag_from_json as the daemon calls it, counting calls and their threads."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __call__(self, text: str) -> DagSpec:
        self.threads.append(threading.get_ident())
        return dag_from_json(text)


async def test_definitions_are_parsed_once_per_version_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = daemon_config(tmp_path, reload_interval=1000)
    runs = []
    async with open_daemon(config) as daemon:
        for marker in ("one", "two", "three"):  # three versions, one run each
            write_dag_file(config.dags_dir, "edited", dag(marker))
            await daemon.reload()
            run_id = await daemon.trigger("edited")
            await wait_status(daemon, run_id)
            runs.append(run_id)
    write_dag_file(config.dags_dir, "edited", dag("four"))
    parses = Parses()
    monkeypatch.setattr(daemon_module, "dag_from_json", parses)
    monkeypatch.setattr(daemon_module, "PARSED_DEFINITIONS", 2, raising=False)
    async with open_daemon(config) as daemon:  # a new process: nothing in memory
        loop = threading.get_ident()
        versions = set()
        for _ in range(3):
            for run_id in runs[:2]:
                detail = await daemon.run_detail(run_id)
                assert [s.step_id for s in detail.steps] == ["a", "b"]
                versions.add(detail.dag_version)
        assert len(versions) == 2 and None not in versions
        assert len(parses.threads) == 2  # once per version, then from memory
        assert loop not in parses.threads
        # a third version pushes out the least recently used one (runs[0]'s)
        await daemon.run_detail(runs[2])
        await daemon.run_detail(runs[1])
        assert len(parses.threads) == 3
        await daemon.run_detail(runs[0])
        assert len(parses.threads) == 4
        # the loaded DAG's own version is never parsed: a run of it is described from it
        run_id = await daemon.trigger("edited")
        await wait_status(daemon, run_id)
        daemon.admission.recall(run_id)  # as if it had been forgotten: read from the store
        detail = await daemon.run_detail(run_id)
        assert detail.dag_version is not None and len(parses.threads) == 4


async def test_a_live_run_is_described_from_its_dagspec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = daemon_config(tmp_path, reload_interval=1000)
    write_dag_file(config.dags_dir, "slow", '[steps.s]\ncommand = "sleep 30"\n')
    parses = Parses()
    monkeypatch.setattr(daemon_module, "dag_from_json", parses)
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("slow")
        stored = await daemon.store.run_definition(run_id)
        assert stored is not None
        detail = await daemon.run_detail(run_id)
        assert detail.dag_version == stored[0]
        assert [s.step_id for s in detail.steps] == ["s"]
        # a live run whose DagSpec is no loaded DAG's (the file changed since): the version
        # is read from the store, the definition still not parsed
        write_dag_file(config.dags_dir, "slow", '[steps.s]\ncommand = "sleep 31"\n')
        await daemon.reload()
        detail = await daemon.run_detail(run_id)
        assert detail.dag_version == stored[0]
        assert parses.threads == []
        await daemon.cancel(run_id)
