"""The daemon in-process (open_daemon): real SQLite in a tmp state dir, real DAG files in a tmp
folder, shell steps with short commands. No WebSocket server."""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import proctools as procs
import pytest
import trio
from daemonhelp import daemon_config, wait_status, wait_until, write_dag_file

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.events import (
    EVENT_TYPES,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import FINISHED_RUN, RunStatus, StepStatus
from dagd.daemon.daemon import Daemon, DaemonError
from dagd.daemon.hub import Hub
from dagd.daemon.schema import MIGRATIONS, migrate
from dagd.daemon.store import Store, StoredEvent, connect
from dagd.runtime.local.executor import LocalExecutor

S = StepStatus
OLD_STATE_FILE = Path(__file__).parent / "data" / "state-before-attempt-numbers.sqlite3"


# ----------------------------------------------------------------------------------- helpers


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return daemon_config(tmp_path, reload_interval=0.1)


def write_dag(config: Config, name: str, text: str) -> Path:
    """Write dags/<name>.toml; its mtime moves forward even within one coarse timestamp tick, so
    the folder watcher always sees a rewrite as a change."""
    return write_dag_file(config.dags_dir, name, textwrap.dedent(text))


def db_rows(config: Config, sql: str, args: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(config.db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def integrity_ok(config: Config) -> bool:
    return db_rows(config, "PRAGMA integrity_check") == [("ok",)]


async def collect_run(daemon: Daemon, run_id: str, into: list[StoredEvent]) -> None:
    """Append every committed event of `run_id` until its final run status."""
    with daemon.subscribe() as sub:
        async for stored in sub:
            if getattr(stored.event, "run_id", None) != run_id:
                continue
            into.append(stored)
            ev = stored.event
            if isinstance(ev, DagRunStatusEvent) and ev.status.finished:
                return


def log_file(config: Config, dag_id: str, run_id: str, name: str) -> Path:
    return config.log_dir / dag_id / run_id / name


# -------------------------------------------------------------------------- a whole run


async def test_trigger_events_in_order_and_matching_rows(config: Config) -> None:
    write_dag(
        config,
        "hello",
        """
        description = "two steps"
        params = { who = "world" }
        [steps.a]
        command = 'echo "hello $DAGD_PARAM_WHO"'
        [steps.b]
        command = "echo b"
        depends_on = ["a"]
        """,
    )
    async with open_daemon(config) as daemon:
        assert set(daemon.dags) == {"hello"}
        [info] = daemon.list_dags()
        assert (info.dag_id, info.steps, info.params) == ("hello", ["a", "b"], {"who": "world"})
        got: list[StoredEvent] = []
        async with trio.open_nursery() as nursery:
            run_id = await daemon.trigger("hello", {"who": "dagd"})
            nursery.start_soon(collect_run, daemon, run_id, got)
        with pytest.raises(DaemonError) as err:
            await daemon.trigger("nope")
        assert err.value.code == "unknown_dag"
        with pytest.raises(DaemonError) as err:
            await daemon.trigger("hello", {"whom": "x"})
        assert err.value.code == "invalid_params"
        record, steps = await wait_status(daemon, run_id)
        runs = await daemon.list_runs("hello")
    assert log_file(config, "hello", run_id, "a.1.out").read_text() == "hello dagd\n"

    # Events: strictly increasing seq (consecutive: nothing else was published), in run order.
    seqs = [s.seq for s in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert all(s.event.seq == s.seq for s in got)
    events = [s.event for s in got]
    runs_ev = [e.status for e in events if isinstance(e, DagRunStatusEvent)]
    assert runs_ev == [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCESS]
    step_ev = [(e.step_id, e.status) for e in events if isinstance(e, StepStatusEvent)]
    assert step_ev == [("a", S.RUNNING), ("a", S.SUCCESS), ("b", S.RUNNING), ("b", S.SUCCESS)]
    assert not any(isinstance(e, ErrorEvent) for e in events)
    last_progress = [e for e in events if isinstance(e, DagRunProgressEvent)][-1]
    assert (last_progress.completed_steps, last_progress.completion_percentage) == (2, 100.0)
    assert events[-1] == DagRunStatusEvent(
        "hello", run_id, RunStatus.SUCCESS, events[-1].timestamp, seqs[-1]
    )

    # The log holds exactly these events, with the same seq and wire text.
    rows = db_rows(
        config, "SELECT seq, dag_id, run_id, type, body FROM events WHERE run_id=?", (run_id,)
    )
    assert [(r[0], r[3], r[4]) for r in rows] == [
        (s.seq, EVENT_TYPES[type(s.event)], s.text) for s in got
    ]
    assert all(json.loads(r[4])["seq"] == r[0] for r in rows)

    # The runs and steps tables agree with the events.
    assert record.status == "success"
    assert record.params == {"who": "dagd"}
    assert record.dag_id == "hello"
    assert record.started_at is not None and record.ended_at is not None
    assert record.queued_at <= record.started_at <= record.ended_at
    assert [r.run_id for r in runs] == [run_id]
    assert set(steps) == {"a", "b"}
    for sid in ("a", "b"):
        last = [e for e in events if isinstance(e, StepStatusEvent) and e.step_id == sid][-1]
        st = steps[sid]
        assert (st.status, st.retry_count, st.error) == ("success", 0, None)
        assert (st.start_time, st.end_time, st.duration) == (
            last.start_time,
            last.end_time,
            last.duration,
        )
        assert st.leftover is not None and st.leftover["boot_id"] is not None
    assert integrity_ok(config)


async def test_a_daemon_runs_on_the_collaborators_it_is_given(config: Config) -> None:
    """No composition root: a store, a hub, an executor and a fixed clock handed in, the
    store's writer started by the caller, and the daemon uses exactly those."""
    write_dag(config, "quick", '[steps.s]\ncommand = "echo hi"\n')
    hub = Hub()
    store = Store.open(config.db_path, on_commit=hub.publish)
    executor = LocalExecutor(grace=0.5)
    daemon = Daemon(config, store=store, hub=hub, executors=executor, clock=lambda: 1_000_000.0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.writer)
            await daemon.start(nursery)
            got: list[StoredEvent] = []
            async with trio.open_nursery() as inner:
                run_id = await daemon.trigger("quick")
                inner.start_soon(collect_run, daemon, run_id, got)
            await daemon.stop()
            await store.flush()
            nursery.cancel_scope.cancel()
        record, _ = await wait_status(daemon, run_id)
    finally:
        store.close()
    assert run_id == "manual__1970-01-12T13:46:40.000000+00:00"
    assert (record.status, record.queued_at, record.started_at) == ("success", 1e6, 1e6)
    assert {s.event.timestamp for s in got} == {1e6}
    assert not (config.log_dir / "quick").exists()  # this executor was given no log folder


# ---------------------------------------------------------------------- max_active_runs


GATED = """
max_active_runs = 1
[steps.wait]
command = 'while [ ! -e "$GATE" ]; do sleep 0.01; done; echo "$DAGD_RUN_ID" >> "$ORDER"'
env = {{ GATE = "{gate}", ORDER = "{order}" }}
"""


async def test_max_active_runs_queues_the_second_run(config: Config, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    write_dag(config, "gated", GATED.format(gate=gate, order=order))
    async with open_daemon(config) as daemon:
        first = await daemon.trigger("gated")
        second = await daemon.trigger("gated")
        await wait_status(daemon, first, ("running",))
        await daemon.store.flush()
        assert (await daemon.get_run(second))[0].status == "queued"  # type: ignore[index]
        assert [s.run_id for s in daemon.run_states({"gated"})] == [first, second]
        await trio.sleep(0.2)  # it keeps waiting
        assert (await daemon.get_run(second))[0].status == "queued"  # type: ignore[index]
        gate.touch()
        rec1, _ = await wait_status(daemon, first)
        rec2, _ = await wait_status(daemon, second)
    assert rec1.status == rec2.status == "success"
    assert rec2.started_at is not None and rec1.ended_at is not None
    assert rec2.started_at >= rec1.ended_at
    assert order.read_text().split() == [first, second]
    assert integrity_ok(config)


# -------------------------------------------------------------------------------- cancel


async def test_cancel_a_running_run_kills_its_processes(config: Config) -> None:
    mark = procs.new_mark()
    write_dag(
        config,
        "slow",
        f"""
        env = {{ {procs.MARK_VAR} = "{mark}" }}
        [steps.tree]
        command = "sleep 600 & sleep 600"
        [steps.after]
        command = "echo never"
        depends_on = ["tree"]
        """,
    )
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("slow")
        await wait_until(lambda: len(procs.live_processes(mark)) >= 2)
        await daemon.cancel(run_id)
        record, steps = await wait_status(daemon, run_id, timeout=5)
        with pytest.raises(DaemonError) as err:
            await daemon.cancel(run_id)
        assert err.value.code == "not_running"
        with pytest.raises(DaemonError) as err:
            await daemon.cancel("no-such-run")
        assert err.value.code == "unknown_run"
    assert record.status == "cancelled"
    assert steps["tree"].status == "cancelled"
    assert steps["tree"].error == "cancelled by user"
    assert steps["after"].status == "cancelled"
    assert await trio.to_thread.run_sync(procs.wait_gone, mark) == []
    assert integrity_ok(config)


async def test_cancel_a_queued_run(config: Config, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    write_dag(config, "gated", GATED.format(gate=gate, order=order))
    async with open_daemon(config) as daemon:
        first = await daemon.trigger("gated")
        second = await daemon.trigger("gated")
        await wait_status(daemon, first, ("running",))
        got: list[StoredEvent] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_run, daemon, second, got)
            await trio.sleep(0)
            await daemon.cancel(second, "not needed")
        record, steps = await wait_status(daemon, second)
        assert record.status == "cancelled"
        assert record.started_at is None
        assert steps["wait"].status == "cancelled"
        assert steps["wait"].error == "not needed"
        assert [type(s.event) for s in got][-1] is DagRunStatusEvent
        assert daemon.active.keys() == {first}  # the running one is untouched
        gate.touch()
        assert (await wait_status(daemon, first))[0].status == "success"
    assert order.read_text().split() == [first]  # the cancelled run never ran
    assert integrity_ok(config)


# --------------------------------------------------------------------------------- retry


FLAKY = """
[steps.a]
command = 'echo ran >> "$COUNT_A"; echo a'
env = {{ COUNT_A = "{count}" }}
[steps.b]
command = '''
if [ -e "$M" ]; then echo "fixed on attempt $DAGD_ATTEMPT" >&2; exit 0; fi
touch "$M"; echo "not yet" >&2; exit 3'''
env = {{ M = "{marker}" }}
depends_on = ["a"]
[steps.c]
command = "echo c"
depends_on = ["b"]
"""


async def test_retry_from_failure_keeps_successful_steps(config: Config, tmp_path: Path) -> None:
    count, marker = tmp_path / "count", tmp_path / "marker"
    write_dag(config, "flaky", FLAKY.format(count=count, marker=marker))
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("flaky")
        record, steps = await wait_status(daemon, run_id)
        assert record.status == "failed"
        assert steps["a"].status == "success"
        assert steps["b"].status == "failed"
        assert steps["b"].error == "exit code 3: not yet"
        assert steps["c"].status == "upstream_failed"
        a_first = (steps["a"].start_time, steps["a"].end_time)

        got: list[StoredEvent] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_run, daemon, run_id, got)
            await trio.sleep(0)
            assert await daemon.retry(run_id) == run_id
        record, steps = await wait_status(daemon, run_id)
        with pytest.raises(DaemonError) as err:
            await daemon.retry(run_id)
        assert err.value.code == "not_retryable"
        with pytest.raises(DaemonError) as err:
            await daemon.retry("no-such-run")
        assert err.value.code == "unknown_run"
    assert record.status == "success"
    assert {sid: st.status for sid, st in steps.items()} == dict.fromkeys("abc", "success")
    assert count.read_text() == "ran\n"  # a did not run again
    assert (steps["a"].start_time, steps["a"].end_time) == a_first
    # a's log was not touched by the retry (no stderr file: a wrote nothing there)
    assert [p.name for p in (config.log_dir / "flaky" / run_id).glob("a.*")] == ["a.1.out"]
    assert log_file(config, "flaky", run_id, "a.1.out").read_text() == "a\n"
    # the retry numbers b's attempt onwards: its first try's log stays as it was
    assert log_file(config, "flaky", run_id, "b.1.err").read_text() == "not yet\n"
    assert log_file(config, "flaky", run_id, "b.2.err").read_text() == "fixed on attempt 2\n"
    retried = [(e.step_id, e.status) for e in (s.event for s in got) if type(e) is StepStatusEvent]
    assert ("a", S.RUNNING) not in retried
    assert retried[-2:] == [("c", S.RUNNING), ("c", S.SUCCESS)]
    assert ("b", S.SUCCESS) in retried
    assert integrity_ok(config)


async def test_retry_after_the_daemon_was_reopened(config: Config, tmp_path: Path) -> None:
    count, marker = tmp_path / "count", tmp_path / "marker"
    write_dag(config, "flaky", FLAKY.format(count=count, marker=marker))
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("flaky")
        record, _ = await wait_status(daemon, run_id)
        assert record.status == "failed"
    # A new daemon on the same state dir rebuilds the run from the database.
    async with open_daemon(config) as daemon:
        assert daemon.run_states() == []
        got: list[StoredEvent] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_run, daemon, run_id, got)
            await trio.sleep(0)
            await daemon.retry(run_id)
        record, steps = await wait_status(daemon, run_id)
    assert [e.status for e in (s.event for s in got) if type(e) is DagRunStatusEvent] == [
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.SUCCESS,
    ]
    assert record.status == "success"
    assert {sid: st.status for sid, st in steps.items()} == dict.fromkeys("abc", "success")
    assert count.read_text() == "ran\n"
    assert log_file(config, "flaky", run_id, "c.1.out").read_text() == "c\n"
    # the new daemon read b's attempt number from the database and went on from it
    assert log_file(config, "flaky", run_id, "b.2.err").read_text() == "fixed on attempt 2\n"
    assert steps["b"].attempt == 2
    assert integrity_ok(config)


async def test_retry_of_a_cancelled_run(config: Config, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    write_dag(config, "gated", GATED.format(gate=gate, order=order))
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("gated")
        await wait_status(daemon, run_id, ("running",))
        with pytest.raises(DaemonError) as err:
            await daemon.retry(run_id)
        assert err.value.code == "not_finished"
        await daemon.cancel(run_id)
        assert (await wait_status(daemon, run_id))[0].status == "cancelled"
        gate.touch()
        got: list[StoredEvent] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_run, daemon, run_id, got)
            await trio.sleep(0)
            await daemon.retry(run_id)
        record, _ = await wait_status(daemon, run_id)
    assert record.status == "success"
    assert order.read_text().split() == [run_id]


async def cancelled_run_and_one_holding_the_slot(daemon: Daemon) -> tuple[str, str]:
    """Of the GATED DAG (max_active_runs = 1): a run cancelled while running, to retry, and
    then a second run that holds the only slot until the gate file appears."""
    first = await daemon.trigger("gated")
    await wait_status(daemon, first, ("running",))
    await daemon.cancel(first)
    assert (await wait_status(daemon, first))[0].status == "cancelled"
    second = await daemon.trigger("gated")
    await wait_status(daemon, second, ("running",))
    return first, second


async def test_retry_waits_queued_for_a_max_active_runs_slot(
    config: Config, tmp_path: Path
) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    write_dag(config, "gated", GATED.format(gate=gate, order=order))
    async with open_daemon(config) as daemon:
        first, second = await cancelled_run_and_one_holding_the_slot(daemon)
        got: list[StoredEvent] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_run, daemon, first, got)
            await trio.sleep(0)
            await daemon.retry(first)
            # stored as queued before the answer, as trigger does; its events follow
            record, _ = (await daemon.store.get_run(first)) or (None, None)
            assert record is not None and record.status == "queued"
            assert record.ended_at is None  # waiting again, not ended
            await daemon.store.flush()
            _, steps = await wait_status(daemon, first, ("queued",))
            assert steps["wait"].status == "pending"
            await trio.sleep(0.2)
            assert (await daemon.store.get_run(first))[0].status == "queued"  # still waiting
            gate.touch()  # the second run ends, and the retried one gets its slot
        record, _ = await wait_status(daemon, first)
    assert record.status == "success"
    statuses = [e.status for e in (s.event for s in got) if type(e) is DagRunStatusEvent]
    assert statuses == [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCESS]
    assert order.read_text().split() == [second, first]


# ---------------------------------------------------------------------------- hot reload


async def test_hot_reload_add_change_break_remove(config: Config, tmp_path: Path) -> None:
    out = tmp_path / "out"
    version = """
    description = "{desc}"
    [steps.s]
    command = 'echo {word} >> "{out}"'
    """
    async with open_daemon(config) as daemon:
        assert daemon.dags == {}

        # Add: the new DAG appears.
        write_dag(config, "live", version.format(desc="v1", word="one", out=out))
        await wait_until(lambda: "live" in daemon.dags)
        assert [d.dag_id for d in daemon.list_dags()] == ["live"]
        assert daemon.list_dags()[0].description == "v1"
        run1 = await daemon.trigger("live")
        assert (await wait_status(daemon, run1))[0].status == "success"

        # Change: new runs use the new definition.
        write_dag(config, "live", version.format(desc="v2", word="two", out=out))
        await wait_until(lambda: daemon.dags["live"].description == "v2")
        run2 = await daemon.trigger("live")
        assert (await wait_status(daemon, run2))[0].status == "success"
        assert out.read_text().split() == ["one", "two"]

        # Break: the last good version stays, and an error event names the file and problem.
        with daemon.subscribe() as sub:
            path = write_dag(
                config,
                "live",
                """
                description = "v3"
                [steps.s]
                command = "echo three"
                depends_on = ["nope"]
                """,
            )
            with trio.fail_after(5):
                async for stored in sub:
                    if isinstance(stored.event, ErrorEvent):
                        break
        err = stored.event
        assert err.run_id is None and err.step_id is None
        assert err.dag_id == "live"
        assert str(path) in err.error
        assert "unknown step 'nope'" in err.error
        assert daemon.dags["live"].description == "v2"
        assert "unknown step 'nope'" in daemon.problems[str(path)]
        assert db_rows(
            config, "SELECT dag_id, run_id, type FROM events WHERE seq=?", (stored.seq,)
        ) == [("live", None, "error")]
        run3 = await daemon.trigger("live")
        assert (await wait_status(daemon, run3))[0].status == "success"
        assert out.read_text().split() == ["one", "two", "two"]

        # Fixing the file clears the problem.
        write_dag(config, "live", version.format(desc="v4", word="four", out=out))
        await wait_until(lambda: daemon.dags["live"].description == "v4")
        assert daemon.problems == {}

        # Remove: the DAG is gone.
        path.unlink()
        await wait_until(lambda: "live" not in daemon.dags)
        assert daemon.list_dags() == []
        with pytest.raises(DaemonError) as exc:
            await daemon.trigger("live")
        assert exc.value.code == "unknown_dag"
    assert integrity_ok(config)


async def test_a_file_broken_from_the_start_and_a_duplicate_id(config: Config) -> None:
    bad = write_dag(config, "bad", "this is = not toml [")
    write_dag(config, "one", 'id = "same"\n[steps.s]\ncommand = "true"\n')
    async with open_daemon(config) as daemon:
        assert set(daemon.dags) == {"same"}
        assert "not valid TOML" in daemon.problems[str(bad)]
        await daemon.store.flush()  # the startup error event is committed before we listen
        with daemon.subscribe() as sub:
            dup = write_dag(config, "two", 'id = "same"\n[steps.s]\ncommand = "false"\n')
            with trio.fail_after(5):
                async for stored in sub:
                    if isinstance(stored.event, ErrorEvent):
                        break
        assert str(dup) in stored.event.error
        assert "already used" in stored.event.error
        assert daemon.dags["same"].source == str(config.dags_dir / "one.toml")
        # The owner of the id goes away: the refused file takes its place at once, without
        # waiting for an edit; the broken file is not re-reported.
        (config.dags_dir / "one.toml").unlink()
        await daemon.reload()
        assert daemon.dags["same"].source == str(dup)
        assert str(dup) not in daemon.problems
        assert str(bad) in daemon.problems
        await daemon.store.flush()
    rows = db_rows(config, "SELECT dag_id, run_id, body FROM events WHERE type='error'")
    assert [(r[0], r[1]) for r in rows] == [("bad", None), ("two", None)]


# --------------------------------------------------------------------- event log and restarts


async def test_seq_never_repeats_across_reopen(config: Config) -> None:
    write_dag(config, "quick", '[steps.s]\ncommand = "true"\n')
    sessions: list[list[int]] = []
    for i in range(3):
        async with open_daemon(config) as daemon:
            got: list[StoredEvent] = []
            async with trio.open_nursery() as nursery:
                run_id = await daemon.trigger("quick")
                nursery.start_soon(collect_run, daemon, run_id, got)
            sessions.append([s.seq for s in got])
            if i == 1:
                # Retention deleting every event does not make numbers come back.
                await daemon.store.flush()
                assert await daemon.store.prune(1, None) > 0
    for earlier, later in itertools.pairwise(sessions):
        assert min(later) > max(earlier)
    flat = [seq for session in sessions for seq in session]
    assert flat == sorted(set(flat))
    seqs = [r[0] for r in db_rows(config, "SELECT seq FROM events ORDER BY seq")]
    assert seqs == sorted(set(seqs))
    assert set(sessions[2]) <= set(seqs)
    assert integrity_ok(config)


async def left_running(config: Config, *step_updates: str) -> str:
    """A run of a two-step DAG as a killed daemon leaves it: finished for real, then its record
    set back to 'running' and its steps changed by `step_updates` (SQL)."""
    write_dag(config, "two", '[steps.s]\ncommand = "true"\n[steps.t]\ncommand = "true"\n')
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("two")
        await wait_status(daemon, run_id)
    conn = sqlite3.connect(config.db_path)
    with conn:
        conn.execute("UPDATE runs SET status='running' WHERE run_id=?", (run_id,))
        for update in step_updates:
            conn.execute(update)
    conn.close()
    return run_id


async def test_reopen_closes_out_a_run_left_running(config: Config) -> None:
    """What a killed daemon leaves (a run and a step still 'running') is closed out as failed
    by the next one. (The real kill -9 is in test_daemon_process.py.)"""
    run_id = await left_running(
        config,
        "UPDATE steps SET status='running' WHERE step_id='s'",
        "UPDATE steps SET status='pending' WHERE step_id='t'",
    )
    async with open_daemon(config) as daemon:
        record, steps = await wait_status(daemon, run_id)
    assert record.status == "failed"
    assert (steps["s"].status, steps["s"].error) == ("failed", "interrupted: the daemon stopped")
    assert (steps["t"].status, steps["t"].error) == ("cancelled", "interrupted: the daemon stopped")
    assert integrity_ok(config)


async def test_shutdown_cancels_running_and_queued_runs(config: Config, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    write_dag(config, "gated", GATED.format(gate=gate, order=order))
    async with open_daemon(config) as daemon:
        first = await daemon.trigger("gated")
        second = await daemon.trigger("gated")
        await wait_status(daemon, first, ("running",))
    conn = sqlite3.connect(config.db_path)
    statuses = dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
    conn.close()
    assert statuses == {first: "cancelled", second: "cancelled"}
    assert integrity_ok(config)


# ------------------------------------------------------------------------------ scheduling


async def test_two_dags_firing_at_the_same_slot_get_their_own_runs(config: Config) -> None:
    """Run ids key runs across all DAGs (cancel, retry, the runs table): two DAGs with the same
    schedule must not share the id of their run for a slot."""
    for name in ("alpha", "beta"):
        write_dag(
            config,
            name,
            f"""
            schedule = "0 0 1 1 *"
            [steps.s]
            command = "echo {name}"
            """,
        )
    conn = connect(config.db_path)
    migrate(conn)
    for name in ("alpha", "beta"):
        conn.execute("INSERT INTO schedule VALUES (?, ?)", (name, time.time() - 400 * 86400))
    conn.close()
    async with open_daemon(config) as daemon:
        await wait_until(lambda: len(daemon.run_states()) == 2)
        ids = {s.dag.id: s.run_id for s in daemon.run_states()}
        assert ids["alpha"] != ids["beta"]
        for dag_id, run_id in ids.items():
            assert run_id.startswith("scheduled__")
            record, _ = await wait_status(daemon, run_id)
            assert (record.dag_id, record.status) == (dag_id, "success")
            assert log_file(config, dag_id, run_id, "s.1.out").read_text() == f"{dag_id}\n"
        assert daemon.list_dags()[0].next_run is not None
    assert sorted(db_rows(config, "SELECT dag_id, status FROM runs")) == [
        ("alpha", "success"),
        ("beta", "success"),
    ]


async def test_the_same_slot_cannot_be_queued_twice(config: Config, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    write_dag(config, "gated", GATED.format(gate=gate, order=order))
    async with open_daemon(config) as daemon:
        slot = datetime(2024, 1, 1, tzinfo=UTC)
        daemon._fire_scheduled(daemon.dags["gated"], slot)
        with pytest.raises(DaemonError) as err:
            daemon._fire_scheduled(daemon.dags["gated"], slot)
        assert err.value.code == "duplicate_run"
        assert len(daemon.run_states()) == 1
        gate.touch()


# ------------------------------------------------------- events, old state files, retries


async def test_a_plain_async_for_over_events_keeps_up_with_a_fast_run(config: Config) -> None:
    """daemon.events() consumed one event per loop iteration, as a user would write it, during
    a 3,000-step chain of no-op steps: every event of the run arrives, in seq order, and the
    consumer is never cut off as slow."""
    steps = "".join(
        f'[steps.s{i}]\ncall = "stepfuncs:noop"\n' + (f'depends_on = ["s{i - 1}"]\n' if i else "")
        for i in range(3000)
    )
    write_dag(config, "long", steps)
    async with open_daemon(config) as daemon:
        events = daemon.events(["long"])
        run_id = await daemon.trigger("long")
        seqs = []
        async for event in events:
            seqs.append(event.seq)
            if isinstance(event, DagRunStatusEvent) and event.status.finished:
                assert event.status == "success"
                break
    stored = [
        row[0]
        for row in db_rows(
            config, "SELECT seq FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        )
    ]
    assert seqs == stored
    assert len(seqs) > 6000


async def test_a_state_file_from_before_attempt_numbers_is_upgraded(
    config: Config, tmp_path: Path
) -> None:
    # The steps table as dagd wrote it before it kept attempt numbers, with a failed run in it.
    old_schema = MIGRATIONS[0]
    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(config.db_path)
    conn.executescript(old_schema)
    conn.execute(
        "INSERT INTO runs (run_id, dag_id, status, queued_at, ended_at)"
        " VALUES ('old-run', 'flaky', 'failed', 1, 2)"
    )
    conn.execute(
        "INSERT INTO steps (run_id, step_id, status, retry_count, start_time, end_time)"
        " VALUES ('old-run', 'a', 'failed', 0, 1, 2)"
    )
    conn.commit()
    conn.close()
    count, marker = tmp_path / "count", tmp_path / "marker"
    write_dag(config, "flaky", FLAKY.format(count=count, marker=marker))
    marker.touch()  # b succeeds at once
    async with open_daemon(config) as daemon:
        await daemon.retry("old-run")
        record, steps = await wait_status(daemon, "old-run")
    assert record.status == "success"
    # a's one known attempt was 1 (its number was not kept): the retry's is 2
    assert (steps["a"].attempt, steps["b"].attempt, steps["c"].attempt) == (2, 1, 1)
    assert log_file(config, "flaky", "old-run", "a.2.out").read_text() == "a\n"


async def test_a_run_in_a_state_file_of_an_older_dagd_can_be_retried(
    config: Config, tmp_path: Path
) -> None:
    """A state file written by dagd before it numbered attempts or its schema (see
    test_schema.py): the run that failed there is retried here, going on from its record."""
    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(OLD_STATE_FILE, config.db_path)
    [(run_id,)] = db_rows(config, "SELECT run_id FROM runs WHERE status = 'failed'")
    count, marker = tmp_path / "count", tmp_path / "marker"
    write_dag(config, "flaky", FLAKY.format(count=count, marker=marker))
    marker.touch()  # b succeeds at once
    async with open_daemon(config) as daemon:
        await daemon.retry(run_id)
        record, steps = await wait_status(daemon, run_id)
    assert record.status == "success"
    assert not count.exists()  # a succeeded back then: kept
    assert (steps["a"].attempt, steps["b"].attempt, steps["c"].attempt) == (0, 2, 1)
    assert log_file(config, "flaky", run_id, "b.2.err").read_text() == "fixed on attempt 2\n"


async def test_cancel_a_retry_that_waits_for_its_slot(config: Config, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    write_dag(config, "gated", GATED.format(gate=gate, order=order))
    async with open_daemon(config) as daemon:
        first, second = await cancelled_run_and_one_holding_the_slot(daemon)
        await daemon.retry(first)
        await daemon.cancel(first)  # while it waits for the slot
        record, steps = await wait_status(daemon, first)
        assert record.status == "cancelled"
        assert steps["wait"].status == "cancelled"
        gate.touch()
        assert (await wait_status(daemon, second))[0].status == "success"
        await daemon.retry(first)  # and it can be retried again
        assert (await wait_status(daemon, first, ("success",)))[0].status == "success"
    assert order.read_text().split() == [second, first]


async def test_two_retries_of_one_run_at_once_run_it_once(config: Config, tmp_path: Path) -> None:
    count, marker = tmp_path / "count", tmp_path / "marker"
    write_dag(config, "flaky", FLAKY.format(count=count, marker=marker))
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("flaky")
        await wait_status(daemon, run_id)
    async with open_daemon(config) as daemon:  # from the record: the retry awaits the store
        outcomes: list[str] = []

        async def retry() -> None:
            try:
                outcomes.append(await daemon.retry(run_id))
            except DaemonError as exc:
                outcomes.append(exc.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(retry)
            nursery.start_soon(retry)
        assert sorted(outcomes) == sorted([run_id, "not_finished"])
        record, _ = await wait_status(daemon, run_id, ("success",))
    assert record.status == "success"
    b_log = log_file(config, "flaky", run_id, "b.2.err").read_text()
    assert b_log == "fixed on attempt 2\n"  # one retry ran b, once


async def test_a_run_cancelled_right_after_its_trigger_stays_cancelled(tmp_path: Path) -> None:
    # The run's driver has not begun when the cancel comes: the run must not start anyway.
    config = daemon_config(tmp_path, reload_interval=1000)
    marker = tmp_path / "ran"
    write_dag_file(config.dags_dir, "quick", f'[steps.a]\ncommand = "touch {marker}"\n')
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("quick")
        await daemon.cancel(run_id)
        await wait_status(daemon, run_id, FINISHED_RUN)
        await trio.sleep(0.3)  # time enough for a wrongly restarted run to run its step
        [record] = [r for r in await daemon.list_runs("quick") if r.run_id == run_id]
        assert record.status is RunStatus.CANCELLED
    assert not marker.exists()


async def test_history_retention_runs_soon_after_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A [history] limit takes effect shortly after `dagd serve` starts, not 5 minutes later.
    import attrs

    from dagd.core.config import HistoryConfig
    from dagd.daemon import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "FIRST_PRUNE_DELAY", 0.2)
    config = daemon_config(tmp_path, reload_interval=1000)
    write_dag_file(config.dags_dir, "quick", '[steps.a]\ncommand = "true"\n')
    async with open_daemon(config) as daemon:
        for _ in range(3):
            await wait_status(daemon, await daemon.trigger("quick"), FINISHED_RUN)
        await trio.sleep(0.5)  # past the first round: without [history], nothing goes
        assert len(await daemon.list_runs("quick")) == 3
    kept = attrs.evolve(config, history=HistoryConfig(keep_runs=1))
    async with open_daemon(kept) as daemon:
        with trio.fail_after(10):
            while len(await daemon.list_runs("quick")) > 1:
                await trio.sleep(0.05)


async def test_the_daemons_reload_imports_call_modules_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `call` module that takes 0.5 s to import must not stall the daemon's clients.
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "dagd_slow_import_daemon.py").write_text(
        "import time\ntime.sleep(0.5)\ndef run(ctx):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    config = daemon_config(tmp_path, reload_interval=1000)
    async with open_daemon(config) as daemon:
        write_dag_file(
            config.dags_dir, "slow", '[steps.a]\ncall = "dagd_slow_import_daemon:run"\n'
        )
        longest = 0.0

        async def tick() -> None:
            nonlocal longest
            while True:
                before = time.perf_counter()
                await trio.sleep(0.005)
                longest = max(longest, time.perf_counter() - before)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            await trio.sleep(0.02)
            await daemon.reload()
            await trio.sleep(0.05)  # the ticker wakes and measures what it waited
            nursery.cancel_scope.cancel()
        assert "slow" in daemon.dags
        assert longest < 0.25, f"the event loop stalled {longest:.3f}s"
