"""Day-two operations on an embedded daemon: one run and one DAG in detail, pause and unpause
(kept across restarts and file edits), dag_status events for pauses and broken files, backfill,
and list_runs of an unknown DAG. Real DAG files, real SQLite, real shell steps."""

from __future__ import annotations

import itertools
import sqlite3
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from daemonhelp import daemon_config, wait_status, wait_until, write_dag_file

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.events import DagStatusEvent
from dagd.core.model import RunStatus, StepStatus, TriggerRule
from dagd.core.protocol.answers import BackfillAction, Edge, TriggerKind
from dagd.core.timefmt import slot_run_id
from dagd.daemon.daemon import Daemon, DaemonError


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return daemon_config(tmp_path, reload_interval=0.05)


def write_dag(config: Config, name: str, text: str) -> Path:
    return write_dag_file(config.dags_dir, name, textwrap.dedent(text))


DAILY = """
    description = "daily"
    schedule = "0 3 * * *"
    timezone = "Europe/Berlin"
    params = {{ day = "today" }}
    [steps.s]
    command = "echo {marker}"
"""


async def dag_statuses(daemon: Daemon, into: list[DagStatusEvent]) -> None:
    with daemon.subscribe() as sub:
        async for stored in sub:
            if isinstance(stored.event, DagStatusEvent):
                into.append(stored.event)


# ----------------------------------------------------------------------------- run detail


async def test_run_detail_of_a_finished_run_has_every_step_and_attempt(
    config: Config, tmp_path: Path
) -> None:
    marker = tmp_path / "tried"
    write_dag(
        config,
        "etl",
        f"""
        [steps.flaky]
        command = "test -f {marker} || {{ touch {marker}; echo boom >&2; exit 3; }}"
        retries = 1
        [steps.load]
        command = "true"
        depends_on = ["flaky"]
        [steps.never]
        command = "true"
        depends_on = ["load"]
        trigger_rule = "one_failed"
        """,
    )
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("etl")
        await wait_status(daemon, run_id)
        await daemon.store.flush()
        detail = await daemon.run_detail(run_id)
        # the same answer once the run is no longer in memory: from the store alone
        daemon.admission.recall(run_id)
        stored = await daemon.run_detail(run_id)
    assert detail.record.run_id == run_id and detail.record.status is RunStatus.SUCCESS
    assert detail.trigger is TriggerKind.MANUAL
    assert detail.duration is not None and detail.duration >= 0
    assert detail.dag_version is not None and len(detail.dag_version) == 64
    assert [s.step_id for s in detail.steps] == ["flaky", "load", "never"]
    flaky, load, never = detail.steps
    assert (flaky.status, flaky.attempt, flaky.retry_count) == (StepStatus.SUCCESS, 2, 1)
    assert [(a.attempt, a.status) for a in flaky.attempts] == [
        (1, StepStatus.RETRYING),
        (2, StepStatus.SUCCESS),
    ]
    assert "exit" in (flaky.attempts[0].error or "") and flaky.attempts[1].error is None
    assert load.depends_on == ["flaky"] and load.status is StepStatus.SUCCESS
    assert never.status is StepStatus.SKIPPED and never.attempts == []
    assert stored == detail


async def test_run_detail_of_a_running_run_is_its_live_state(
    config: Config, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    write_dag(
        config,
        "gated",
        f"""
        [steps.wait]
        command = "while [ ! -f {gate} ]; do sleep 0.02; done"
        [steps.after]
        command = "true"
        depends_on = ["wait"]
        """,
    )
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("gated")
        await wait_until(lambda: daemon.admission.running(run_id) is not None)
        await wait_until(
            lambda: (
                daemon.admission.running(run_id).steps["wait"].status  # type: ignore[union-attr]
                is StepStatus.RUNNING
            )
        )
        detail = await daemon.run_detail(run_id)
        gate.touch()
        await wait_status(daemon, run_id)
    assert detail.record.status is RunStatus.RUNNING and detail.record.ended_at is None
    assert detail.duration is None
    assert [(s.step_id, s.status) for s in detail.steps] == [
        ("wait", StepStatus.RUNNING),
        ("after", StepStatus.PENDING),
    ]
    assert detail.steps[0].start_time is not None and detail.steps[0].attempt == 1


async def test_run_detail_of_an_unknown_run(config: Config) -> None:
    async with open_daemon(config) as daemon:
        with pytest.raises(DaemonError) as err:
            await daemon.run_detail("manual__nope")
    assert err.value.code == "unknown_run" and "manual__nope" in err.value.message


# ----------------------------------------------------------------------------- DAG detail


async def test_dag_detail_gives_the_definition_and_a_graph(config: Config) -> None:
    write_dag(
        config,
        "shape",
        """
        description = "a diamond"
        schedule = "*/5 * * * *"
        timezone = "Europe/Berlin"
        catchup = true
        max_active_runs = 2
        tags = ["t"]
        params = { date = "2024-01-01" }
        [steps.top]
        command = ["echo", "top"]
        retries = 2
        retry_delay = 1.5
        timeout = 30
        [steps.left]
        call = "stepfuncs:sync_noop"
        depends_on = ["top"]
        description = "left side"
        [steps.right]
        command = "echo right"
        depends_on = ["top"]
        [steps.bottom]
        command = "echo bottom"
        depends_on = ["left", "right"]
        trigger_rule = "all_done"
        """,
    )
    async with open_daemon(config) as daemon:
        detail = daemon.dag_detail("shape")
        with pytest.raises(DaemonError) as err:
            daemon.dag_detail("nope")
    assert err.value.code == "unknown_dag"
    summary = detail.summary
    assert (summary.dag_id, summary.schedule, summary.timezone) == (
        "shape",
        "*/5 * * * *",
        "Europe/Berlin",
    )
    assert summary.params == {"date": "2024-01-01"} and summary.tags == ["t"]
    assert (summary.paused, summary.file_error) == (False, None)
    assert summary.next_run is not None
    assert (detail.catchup, detail.max_active_runs, detail.max_active_steps) == (True, 2, None)
    by_id = {s.step_id: s for s in detail.steps}
    assert list(by_id) == ["top", "left", "right", "bottom"]
    assert by_id["top"].command == ["echo", "top"] and by_id["top"].call is None
    assert (by_id["top"].retries, by_id["top"].retry_delay, by_id["top"].timeout) == (2, 1.5, 30)
    assert by_id["left"].call == "stepfuncs:sync_noop" and by_id["left"].command is None
    assert by_id["left"].description == "left side"
    assert by_id["bottom"].trigger_rule is TriggerRule.ALL_DONE
    assert by_id["bottom"].depends_on == ["left", "right"]
    assert {s: by_id[s].level for s in by_id} == {"top": 0, "left": 1, "right": 1, "bottom": 2}
    assert detail.edges == [
        Edge("top", "left"),
        Edge("top", "right"),
        Edge("left", "bottom"),
        Edge("right", "bottom"),
    ]


# -------------------------------------------------------------------- list_runs, unknown


async def test_list_runs_of_an_unknown_dag_is_an_error(config: Config) -> None:
    write_dag(config, "known", "[steps.s]\ncommand = 'true'\n")
    async with open_daemon(config) as daemon:
        assert await daemon.list_runs("known") == []  # loaded, no runs yet: no error
        run_id = await daemon.trigger("known")
        await wait_status(daemon, run_id)
        with pytest.raises(DaemonError) as err:
            await daemon.list_runs("nosuchdag")
        assert err.value.code == "unknown_dag" and "known" in err.value.message
        (config.dags_dir / "known.toml").unlink()
        await wait_until(lambda: not daemon.dags)
        # no longer loaded, but its runs are still there to list
        assert [r.run_id for r in await daemon.list_runs("known")] == [run_id]


# ------------------------------------------------------------------------------- pausing


async def test_pause_is_stored_and_outlives_a_restart_and_file_edits(config: Config) -> None:
    write_dag(config, "daily", DAILY.format(marker="one"))
    async with open_daemon(config) as daemon:
        seen: list[DagStatusEvent] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dag_statuses, daemon, seen)
            await trio.sleep(0)
            assert daemon.list_dags()[0].next_run is not None
            await daemon.pause("daily")
            await daemon.pause("daily")  # again: nothing changes, no second event
            [summary] = daemon.list_dags()
            assert summary.paused and summary.next_run is None
            await wait_until(lambda: len(seen) == 1)
            nursery.cancel_scope.cancel()
        assert (seen[0].dag_id, seen[0].paused, seen[0].file_error) == ("daily", True, None)
        with pytest.raises(DaemonError) as err:
            await daemon.pause("nope")
        assert err.value.code == "unknown_dag"
        # a manual trigger still runs
        run_id = await daemon.trigger("daily")
        assert (await wait_status(daemon, run_id))[0].status == "success"
        # an edit of the file keeps the pause
        write_dag(config, "daily", DAILY.format(marker="two"))
        await wait_until(lambda: "two" in str(daemon.dags["daily"].steps["s"].command))
        assert daemon.list_dags()[0].paused
    async with open_daemon(config) as daemon:
        assert daemon.list_dags()[0].paused
        events, _ = daemon.snapshot({"daily"})
        assert next(e for e in events if isinstance(e, DagStatusEvent)).paused
        assert await daemon.unpause("daily") is not None
        assert not daemon.list_dags()[0].paused
    async with open_daemon(config) as daemon:
        assert not daemon.list_dags()[0].paused


async def test_a_broken_file_shows_on_the_dag_and_clears_when_fixed(config: Config) -> None:
    path = write_dag(config, "daily", DAILY.format(marker="one"))
    async with open_daemon(config) as daemon:
        seen: list[DagStatusEvent] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dag_statuses, daemon, seen)
            await trio.sleep(0)
            write_dag(config, "daily", "schedule = 'not cron'\n[steps.s]\ncommand='true'\n")
            await wait_until(lambda: len(seen) == 1)
            [summary] = daemon.list_dags()
            assert summary.file_error is not None and str(path) in summary.file_error
            assert "cron" in summary.file_error
            assert seen[0].file_error == summary.file_error and not seen[0].paused
            assert daemon.dag_detail("daily").summary.file_error == summary.file_error
            write_dag(config, "daily", DAILY.format(marker="fixed"))
            await wait_until(lambda: len(seen) == 2)
            nursery.cancel_scope.cancel()
        assert seen[1].file_error is None
        assert daemon.list_dags()[0].file_error is None


# ------------------------------------------------------------------------------ backfill

HOURLY = """
    schedule = "0 * * * *"
    params = {{ who = "nobody" }}
    [steps.s]
    command = "{command}"
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


async def test_backfill_queues_each_slot_oldest_first_under_its_scheduled_id(
    config: Config,
) -> None:
    write_dag(config, "hourly", HOURLY.format(command="echo $DAGD_PARAM_WHO"))
    async with open_daemon(config) as daemon:
        dry = await daemon.backfill(
            "hourly", "2024-01-01T00:00Z", "2024-01-01T02:00Z", dry_run=True
        )
        assert dry.dry_run and [s.action for s in dry.slots] == [BackfillAction.QUEUED] * 3
        assert await daemon.list_runs("hourly") == []  # a dry run changes nothing
        result = await daemon.backfill(
            "hourly", "2024-01-01T00:00Z", "2024-01-01T02:00Z", {"who": "me"}
        )
        slots = [utc(2024, 1, 1, h) for h in (0, 1, 2)]
        assert [s.slot for s in result.slots] == [s.timestamp() for s in slots]
        assert [s.run_id for s in result.slots] == [slot_run_id("hourly", s) for s in slots]
        assert result.slots[0].run_id == "scheduled__2024-01-01T00:00:00+00:00__hourly"
        assert [s.action for s in result.slots] == [BackfillAction.QUEUED] * 3
        for slot in result.slots:
            record, _ = await wait_status(daemon, slot.run_id)
            assert record.status == "success" and record.params == {"who": "me"}
        # max_active_runs = 1: they ran one after the other, oldest first
        runs = sorted(await daemon.list_runs("hourly"), key=lambda r: r.started_at or 0)
        assert [r.run_id for r in runs] == [s.run_id for s in result.slots]
        for earlier, later in itertools.pairwise(runs):
            assert earlier.ended_at is not None and later.started_at is not None
            assert earlier.ended_at <= later.started_at
        detail = await daemon.run_detail(result.slots[0].run_id)
        assert detail.trigger is TriggerKind.SCHEDULED

        again = await daemon.backfill("hourly", "2024-01-01T00:00Z", "2024-01-01T02:00Z")
        assert [s.action for s in again.slots] == [BackfillAction.SKIPPED] * 3
        assert "succeeded" in (again.slots[0].reason or "")
        rerun = await daemon.backfill(
            "hourly", "2024-01-01T01:00Z", "2024-01-01T01:00Z", rerun=True
        )
        [one] = rerun.slots
        assert one.action is BackfillAction.RERUN and one.reason is None
        await wait_until(lambda: daemon.admission.find(one.run_id) is not None)
        record, steps = await wait_status(daemon, one.run_id)
        assert record.status == "success" and steps["s"].attempt == 2  # numbering goes on
        # A rerun keeps the run's params: given others, the answer says they were not used.
        [kept] = (
            await daemon.backfill(
                "hourly", "2024-01-01T01:00Z", "2024-01-01T01:00Z", {"who": "you"}, rerun=True
            )
        ).slots
        assert kept.reason == "its run keeps the params it was triggered with"
        record, _ = await wait_status(daemon, kept.run_id)
        assert record.params == {"who": "me"}


async def test_backfill_retries_a_failed_slot(config: Config, tmp_path: Path) -> None:
    marker = tmp_path / "second"
    write_dag(config, "hourly", HOURLY.format(command=f"test -f {marker}"))
    async with open_daemon(config) as daemon:
        [first] = (await daemon.backfill("hourly", "2024-01-01T05:00Z", "2024-01-01T05:30Z")).slots
        assert (await wait_status(daemon, first.run_id))[0].status == "failed"
        marker.touch()
        [again] = (await daemon.backfill("hourly", "2024-01-01T05:00Z", "2024-01-01T05:00Z")).slots
        assert (again.run_id, again.action) == (first.run_id, BackfillAction.RETRIED)
        assert (await wait_status(daemon, first.run_id, {"success"}))[0].status == "success"


async def test_backfill_dates_are_whole_days_in_the_dags_time_zone(config: Config) -> None:
    write_dag(config, "daily", DAILY.format(marker="x"))
    async with open_daemon(config) as daemon:
        result = await daemon.backfill("daily", "2024-01-01", "2024-01-03", dry_run=True)
    # 03:00 in Berlin is 02:00 UTC in winter
    assert [s.slot for s in result.slots] == [utc(2024, 1, d, 2).timestamp() for d in (1, 2, 3)]


async def test_backfill_refusals(config: Config) -> None:
    write_dag(config, "hourly", HOURLY.format(command="true"))
    write_dag(config, "manual", "[steps.s]\ncommand = 'true'\n")
    async with open_daemon(config) as daemon:

        async def code_of(*args: str, **kwargs: object) -> tuple[str, str]:
            with pytest.raises(DaemonError) as err:
                await daemon.backfill(*args, **kwargs)  # type: ignore[arg-type]
            return err.value.code, err.value.message

        assert (await code_of("nope", "2024-01-01", "2024-01-02"))[0] == "unknown_dag"
        code, message = await code_of("manual", "2024-01-01", "2024-01-02")
        assert code == "no_schedule" and "manual" in message
        code, message = await code_of("hourly", "yesterday", "2024-01-02")
        assert code == "invalid_range" and "'yesterday'" in message
        code, message = await code_of("hourly", "2024-01-05", "2024-01-02")
        assert code == "invalid_range" and "before" in message
        code, message = await code_of("hourly", "2024-01-01", "2024-03-01")
        assert code == "invalid_range" and "more than 1000" in message
        # exactly the bound is fine: 1000 hourly slots
        most = await daemon.backfill(
            "hourly", "2024-01-01T00:00Z", "2024-02-11T15:00Z", dry_run=True
        )
        assert len(most.slots) == 1000
        code, _ = await code_of("hourly", "2024-01-01T00:00Z", "2024-02-11T16:00Z")
        assert code == "invalid_range"
        code, _ = await code_of("hourly", "2024-01-01", "2024-01-01", params={"nope": 1})
        assert code == "invalid_params"
        code, message = await code_of("hourly", "2999-01-01", "2999-01-02")
        assert code == "invalid_range" and "future" in message
        assert await daemon.list_runs("hourly") == []  # nothing was queued by any of them
        # slots after now are left to the scheduler
        yesterday = datetime.fromtimestamp(time.time() - 86400, UTC).date().isoformat()
        soon = await daemon.backfill("hourly", yesterday, "2999-01-01", dry_run=True)
        assert 24 <= len(soon.slots) <= 48
        assert soon.slots[-1].slot <= time.time()


async def test_a_paused_dag_misses_its_slots_across_a_restart_until_unpaused(
    config: Config,
) -> None:
    write_dag(config, "yearly", "schedule = '0 0 1 1 *'\n[steps.s]\ncommand = 'true'\n")
    async with open_daemon(config) as daemon:
        await daemon.pause("yearly")
    # As if dagd had last fired it 400 days ago: a slot is due at the next start.
    conn = sqlite3.connect(config.db_path)
    with conn:
        conn.execute("UPDATE schedule SET last_slot = ?", (time.time() - 400 * 86400,))
    conn.close()
    async with open_daemon(config) as daemon:
        await trio.sleep(0.3)
        assert daemon.run_states() == [] and await daemon.list_runs("yearly") == []
        await daemon.unpause("yearly")
        await wait_until(lambda: len(daemon.run_states()) == 1)
        [state] = daemon.run_states()
        assert state.run_id.startswith("scheduled__") and state.run_id.endswith("__yearly")
        await wait_status(daemon, state.run_id)


async def test_backfilled_slots_are_not_fired_again_on_unpause(config: Config) -> None:
    write_dag(
        config, "yearly", "schedule = '0 0 1 1 *'\ncatchup = true\n[steps.s]\ncommand = 'true'\n"
    )
    async with open_daemon(config) as daemon:
        await daemon.pause("yearly")
    # Paused since 800 days ago: the last two new years passed while it was paused.
    conn = sqlite3.connect(config.db_path)
    with conn:
        conn.execute("UPDATE schedule SET last_slot = ?", (time.time() - 800 * 86400,))
    conn.close()
    year = datetime.now(UTC).year
    async with open_daemon(config) as daemon:
        # the older of the two missed slots only: the newer one is still the scheduler's
        done = await daemon.backfill("yearly", f"{year - 1}-01-01", f"{year - 1}-01-01")
        [slot] = done.slots
        await wait_status(daemon, slot.run_id)
        await daemon.unpause("yearly")  # catchup: every missed slot after the backfilled one
        await wait_until(lambda: len(daemon.run_states()) == 2)
        runs = await daemon.list_runs("yearly")
        for run in runs:
            await wait_status(daemon, run.run_id)
        await trio.sleep(0.2)
        runs = await daemon.list_runs("yearly")
    assert sorted(r.run_id for r in runs) == [
        slot.run_id,
        f"scheduled__{year}-01-01T00:00:00+00:00__yearly",
    ]
    # the backfilled run was queued once: the scheduler did not fire its slot again
    conn = sqlite3.connect(config.db_path)
    queued = conn.execute(
        "SELECT count(*) FROM events WHERE run_id = ? AND type = 'dag_run_status'"
        " AND body LIKE '%\"queued\"%'",
        (slot.run_id,),
    ).fetchone()
    conn.close()
    assert queued == (1,)


@pytest.mark.parametrize("restart", [False, True])
async def test_a_backfill_of_part_of_a_pause_leaves_the_other_missed_slots_to_catchup(
    config: Config, restart: bool
) -> None:
    """With catchup, every missed slot without a run runs on unpause: a backfill of the newest
    missed slot only does not swallow the older ones (nor does a restart in between)."""
    write_dag(
        config, "yearly", "schedule = '0 0 1 1 *'\ncatchup = true\n[steps.s]\ncommand = 'true'\n"
    )
    async with open_daemon(config) as daemon:
        await daemon.pause("yearly")
    # Paused since 800 days ago: two or three new years passed while it was paused.
    conn = sqlite3.connect(config.db_path)
    with conn:
        conn.execute("UPDATE schedule SET last_slot = ?", (time.time() - 800 * 86400,))
    conn.close()
    year = datetime.now(UTC).year
    missed = [
        y
        for y in range(year - 3, year + 1)
        if time.time() - 800 * 86400 < datetime(y, 1, 1, tzinfo=UTC).timestamp() <= time.time()
    ]
    assert len(missed) >= 2
    async with open_daemon(config) as daemon:
        done = await daemon.backfill("yearly", f"{missed[-1]}-01-01", f"{missed[-1]}-01-01")
        [newest] = done.slots
        await wait_status(daemon, newest.run_id)
        if not restart:
            await daemon.unpause("yearly")
            await wait_until(lambda: len(daemon.run_states()) == len(missed))
    if restart:
        async with open_daemon(config) as daemon:
            await daemon.unpause("yearly")
            await wait_until(lambda: len(daemon.run_states()) == len(missed) - 1)
    async with open_daemon(config) as daemon:
        runs = await daemon.list_runs("yearly")
        for run in runs:
            await wait_status(daemon, run.run_id)
    assert sorted(r.run_id for r in runs) == [
        f"scheduled__{y}-01-01T00:00:00+00:00__yearly" for y in missed
    ]
    conn = sqlite3.connect(config.db_path)
    queued = conn.execute(
        "SELECT count(*) FROM events WHERE run_id = ? AND type = 'dag_run_status'"
        " AND body LIKE '%\"queued\"%'",
        (newest.run_id,),
    ).fetchone()
    conn.close()
    assert queued == (1,)  # the backfilled slot was not fired again


async def test_broken_files_lists_files_that_never_loaded_and_broken_loaded_ones(
    config: Config,
) -> None:
    daily = write_dag(config, "daily", DAILY.format(marker="one"))
    never = write_dag(
        config,
        "never",
        """
        [steps.a]
        command = "true"
        timeout = -1
        [steps.b]
        commnd = "true"
        """,
    )
    async with open_daemon(config) as daemon:
        [file] = daemon.broken_files()
        assert (file.file, file.dag_id) == (str(never), None)
        assert [(p.step, p.field) for p in file.problems] == [
            ("a", "timeout"),
            ("b", "commnd"),
            ("b", None),  # "a step needs exactly one of 'command' or 'call'"
        ]
        assert all(p.message and "never.toml" not in p.message for p in file.problems)
        write_dag(config, "daily", "schedule = 'not cron'\n[steps.s]\ncommand='true'\n")
        await wait_until(lambda: len(daemon.broken_files()) == 2)
        first, second = daemon.broken_files()  # by path
        assert (first.file, first.dag_id) == (str(daily), "daily")
        assert [(p.step, p.field) for p in first.problems] == [(None, "schedule")]
        assert second.file == str(never)
        never.unlink()
        write_dag(config, "daily", DAILY.format(marker="fixed"))
        await wait_until(lambda: daemon.broken_files() == [])
