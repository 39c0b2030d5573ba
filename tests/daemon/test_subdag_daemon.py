"""Sub-DAG steps and after-triggers through the daemon (open_daemon, real SQLite, real
processes): a child run that succeeds, fails, is cancelled through its parent; the depth
bound; a parent retry making a new child; `after` firing on success only, with params, the
triggering run recorded, and not for a paused DAG."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from daemonhelp import daemon_config, wait_status, wait_until, write_dag_file

from dagd.app import open_daemon
from dagd.core.config import Config
from dagd.core.events import DagRunStatusEvent
from dagd.core.model import MAX_SUBDAG_DEPTH, RunStatus, StepStatus
from dagd.daemon.errors import DaemonError
from dagd.daemon.store import RecordRun, StoredEvent

PARENT = """
params = { day = "mon" }
[steps.prep]
command = 'echo "n=7" >> "$DAGD_OUTPUT"'
[steps.sub]
run = "child"
depends_on = "prep"
params = { day = "${params.day}", n = "${outputs.prep.n}" }
[steps.after_sub]
command = "true"
depends_on = "sub"
"""

CHILD = """
params = {{ day = "", n = "0", fail = "no" }}
[steps.write]
command = 'echo "$DAGD_PARAM_DAY $DAGD_PARAM_N" > {out}'
[steps.check]
command = 'test "$DAGD_PARAM_FAIL" = no || {{ echo boom >&2; exit 3; }}'
depends_on = "write"
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = daemon_config(tmp_path, reload_interval=1000)
    write_dag_file(config.dags_dir, "parent", PARENT)
    write_dag_file(config.dags_dir, "child", CHILD.format(out=tmp_path / "child.out"))
    return config


async def _children(daemon, parent_run_id: str) -> list:  # type: ignore[no-untyped-def]
    runs = await daemon.list_runs("child", limit=50)
    return [r for r in runs if r.parent_run_id == parent_run_id]


async def test_a_child_run_that_succeeds(config: Config, tmp_path: Path) -> None:
    async with open_daemon(config) as daemon:
        events = daemon.events(["child"])
        run_id = await daemon.trigger("parent", {"day": "tue"})
        record, steps = await wait_status(daemon, run_id)
        assert record.status is RunStatus.SUCCESS
        assert steps["after_sub"].status is StepStatus.SUCCESS
        (child,) = await _children(daemon, run_id)
        assert child.status is RunStatus.SUCCESS
        assert child.run_id.startswith("subdag__")
        assert child.params["day"] == "tue" and child.params["n"] == "7"
        assert (tmp_path / "child.out").read_text() == "tue 7\n"
        # The child's status events carry its parent.
        with trio.fail_after(5):
            async for event in events:
                if isinstance(event, DagRunStatusEvent) and event.run_id == child.run_id:
                    assert event.parent_run_id == run_id
                    break
        detail = await daemon.run_detail(child.run_id)
        assert detail.record.parent_run_id == run_id
        assert detail.trigger == "subdag"


async def test_a_child_run_that_fails_fails_its_step_and_a_retry_makes_a_new_child(
    config: Config,
) -> None:
    write_dag_file(
        config.dags_dir,
        "parent",
        PARENT.replace('n = "${outputs.prep.n}"', 'fail = "yes"'),
    )
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("parent")
        record, steps = await wait_status(daemon, run_id)
        assert record.status is RunStatus.FAILED
        (child,) = await _children(daemon, run_id)
        assert child.status is RunStatus.FAILED
        error = steps["sub"].error or ""
        assert f"child run {child.run_id} of child failed: step check failed" == error
        assert steps["after_sub"].status is StepStatus.UPSTREAM_FAILED
        # A retry of the parent reruns the failed step: a new child run.
        await daemon.retry(run_id)
        with trio.fail_after(10):
            while len(await _children(daemon, run_id)) < 2:
                await trio.sleep(0.02)
        record, _ = await wait_status(daemon, run_id)
        assert record.status is RunStatus.FAILED
        children = await _children(daemon, run_id)
        assert len(children) == 2 and child.run_id in {c.run_id for c in children}


async def test_cancelling_the_parent_cancels_the_child(config: Config) -> None:
    write_dag_file(config.dags_dir, "child", '[steps.long]\ncommand = "sleep 30"\n')
    write_dag_file(config.dags_dir, "parent", '[steps.sub]\nrun = "child"\n')
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("parent")

        async def child_running() -> bool:
            found = await _children(daemon, run_id)
            return bool(found) and found[0].status is RunStatus.RUNNING

        with trio.fail_after(5):
            while not await child_running():
                await trio.sleep(0.02)
        (child,) = await _children(daemon, run_id)
        await daemon.cancel(run_id)
        record, _ = await wait_status(daemon, run_id)
        assert record.status is RunStatus.CANCELLED
        child_record, child_steps = await wait_status(daemon, child.run_id)
        assert child_record.status is RunStatus.CANCELLED
        assert run_id in (child_steps["long"].error or "")


async def test_nesting_deeper_than_the_bound_fails_with_a_clear_error(config: Config) -> None:
    levels = MAX_SUBDAG_DEPTH + 1
    for i in range(levels):
        write_dag_file(config.dags_dir, f"d{i}", f'[steps.s]\nrun = "d{i + 1}"\n')
    write_dag_file(config.dags_dir, f"d{levels}", '[steps.s]\ncommand = "true"\n')
    async with open_daemon(config) as daemon:
        run_id = await daemon.trigger("d0")
        record, _ = await wait_status(daemon, run_id, timeout=20)
        assert record.status is RunStatus.FAILED
        deepest = (await daemon.list_runs(f"d{MAX_SUBDAG_DEPTH}"))[0]
        _, steps = await wait_status(daemon, deepest.run_id)
        assert steps["s"].error == (
            f"cannot start a run of DAG 'd{levels}': sub-DAG runs nest at most "
            f"{MAX_SUBDAG_DEPTH} deep; this one would be {levels}"
        )
        assert await daemon.list_runs(f"d{levels}") == []


AFTER = """
after = ["up"]
params = {{ day = "none" }}
[steps.s]
command = 'echo "$DAGD_PARAM_DAY" > {out}'
"""


async def test_after_fires_on_success_only_with_params_and_records_its_trigger(
    tmp_path: Path,
) -> None:
    config = daemon_config(tmp_path, reload_interval=1000)
    write_dag_file(
        config.dags_dir,
        "up",
        'params = { day = "x", fail = "no" }\n[steps.a]\ncommand = "test $DAGD_PARAM_FAIL = no"\n',
    )
    write_dag_file(config.dags_dir, "down", AFTER.format(out=tmp_path / "down.out"))
    async with open_daemon(config) as daemon:
        failed = await daemon.trigger("up", {"fail": "yes"})
        assert (await wait_status(daemon, failed))[0].status is RunStatus.FAILED
        ok = await daemon.trigger("up", {"day": "wed"})
        assert (await wait_status(daemon, ok))[0].status is RunStatus.SUCCESS
        await wait_until(lambda: (tmp_path / "down.out").exists())
        await daemon.store.flush()
        (down,) = await daemon.list_runs("down")
        assert down.triggered_by == ok and down.run_id.startswith("after__")
        assert (await wait_status(daemon, down.run_id))[0].status is RunStatus.SUCCESS
        assert (tmp_path / "down.out").read_text() == "wed\n"
        assert (await daemon.run_detail(down.run_id)).trigger == "after"
        # Paused, it does not fire.
        await daemon.pause("down")
        again = await daemon.trigger("up")
        assert (await wait_status(daemon, again))[0].status is RunStatus.SUCCESS
        await daemon.store.flush()
        assert [r.run_id for r in await daemon.list_runs("down")] == [down.run_id]


async def test_an_after_run_is_stored_with_its_upstreams_success(tmp_path: Path) -> None:
    """Restart safety: the triggered run is queued in the same write as the upstream's final
    status, so a restart can neither lose nor repeat it."""
    config = daemon_config(tmp_path, reload_interval=1000)
    write_dag_file(config.dags_dir, "up", '[steps.a]\ncommand = "true"\n')
    write_dag_file(config.dags_dir, "down", 'after = ["up"]\n[steps.s]\ncommand = "sleep 30"\n')
    async with open_daemon(config) as daemon:
        batches: list[list[object]] = []
        write = daemon.store._write_batch  # dagd's own store, observed

        def spy(batch: list[object]) -> object:
            batches.append(list(batch))
            return write(batch)

        daemon.store._write_batch = spy  # type: ignore[method-assign]
        ok = await daemon.trigger("up")
        await wait_status(daemon, ok)
        await daemon.store.flush()
        (down,) = await daemon.list_runs("down")
        together = [
            b
            for b in batches
            if any(isinstance(i, RecordRun) and i.run_id == down.run_id for i in b)
            and any(
                isinstance(i, StoredEvent)
                and isinstance(i.event, DagRunStatusEvent)
                and (i.event.run_id, i.event.status) == (ok, RunStatus.SUCCESS)
                for i in b
            )
        ]
        assert together, "the after-run and the upstream's success were written apart"


async def test_dags_running_each_other_are_refused_as_broken_files(config: Config) -> None:
    """`dagd validate` refuses the cycle, and so does the daemon: neither file loads (a run
    would wait for ever for its own parent's slot), each is reported broken, and an edit
    that closes the cycle later keeps the last good version."""
    write_dag_file(config.dags_dir, "a", '[steps.s]\nrun = "b"\n')
    write_dag_file(config.dags_dir, "b", '[steps.s]\nrun = "a"\n')
    async with open_daemon(config) as daemon:
        assert "a" not in daemon.dags and "b" not in daemon.dags
        assert sorted(Path(p).name for p in daemon.problems) == ["a.toml", "b.toml"]
        assert "in a cycle: a -> b -> a" in daemon.problems[str(config.dags_dir / "a.toml")]
        with pytest.raises(DaemonError) as err:
            await daemon.trigger("a")
        assert err.value.code == "unknown_dag"
        write_dag_file(config.dags_dir, "b", '[steps.s]\ncommand = "true"\n')
        await daemon.reload()
        assert {"a", "b"} <= set(daemon.dags) and daemon.problems == {}
        write_dag_file(config.dags_dir, "b", '[steps.s]\nrun = "a"\n')
        await daemon.reload()
        assert daemon.dags["b"].steps["s"].command == "true"
        assert daemon.file_error("b") is not None and daemon.file_error("a") is None


async def test_cancelling_a_queued_child_ends_its_parents_step_at_once(config: Config) -> None:
    """A child waiting for a max_active_runs slot and cancelled there never starts: its
    parent's step must still learn that it ended."""
    write_dag_file(
        config.dags_dir, "child", 'max_active_runs = 1\n[steps.long]\ncommand = "sleep 30"\n'
    )
    write_dag_file(config.dags_dir, "parent", '[steps.sub]\nrun = "child"\n')
    async with open_daemon(config) as daemon:
        blocker = await daemon.trigger("child")
        run_id = await daemon.trigger("parent")

        async def child_queued() -> bool:
            found = await _children(daemon, run_id)
            return bool(found) and found[0].status is RunStatus.QUEUED

        with trio.fail_after(5):
            while not await child_queued():
                await trio.sleep(0.02)
        (child,) = await _children(daemon, run_id)
        await daemon.cancel(child.run_id)
        with trio.fail_after(5):  # the blocker still runs: the parent must not wait for it
            record, steps = await wait_status(daemon, run_id)
        assert record.status is RunStatus.FAILED
        assert steps["sub"].status is StepStatus.FAILED
        assert child.run_id in (steps["sub"].error or "")
        assert "cancelled" in (steps["sub"].error or "")
        await daemon.cancel(blocker)


async def test_a_dag_named_like_a_cycle_does_not_make_others_cyclic(tmp_path: Path) -> None:
    """An unknown `after` id is reported with the list of every DAG id; a DAG called
    `lifecycle` in it must not make `down` count as part of a cycle (its links kept)."""
    config = daemon_config(tmp_path, reload_interval=1000)
    write_dag_file(config.dags_dir, "lifecycle", '[steps.a]\ncommand = "true"\n')
    write_dag_file(config.dags_dir, "up", '[steps.a]\ncommand = "true"\n')
    write_dag_file(
        config.dags_dir,
        "down",
        f'after = ["up", "gone"]\n[steps.a]\ncommand = "touch {tmp_path / "down.out"}"\n',
    )
    async with open_daemon(config) as daemon:
        ok = await daemon.trigger("up")
        assert (await wait_status(daemon, ok))[0].status is RunStatus.SUCCESS
        with trio.fail_after(5):
            await wait_until(lambda: (tmp_path / "down.out").exists())
