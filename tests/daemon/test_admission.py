"""Run admission alone: queues per DAG, max_active_runs, the finished-run memory, duplicate
checks and the retry reservation. Synchronous: no trio, no I/O."""

from __future__ import annotations

import pytest

from dagd.core.model import DagSpec, RunStatus
from dagd.core.runstate import RunState
from dagd.core.spec import parse_dag
from dagd.daemon.admission import Admission
from dagd.daemon.errors import DaemonError


def dag(dag_id: str, max_active_runs: int = 1) -> DagSpec:
    text = f'max_active_runs = {max_active_runs}\n[steps.s]\ncommand = "true"\n'
    return parse_dag(text, f"{dag_id}.toml", default_id=dag_id)


def run(spec: DagSpec, run_id: str) -> RunState:
    return RunState(spec, run_id, {})


def ids(states: list[RunState]) -> list[str]:
    return [s.run_id for s in states]


@pytest.mark.parametrize(
    ("max_active", "started"),
    [(1, ["r1"]), (2, ["r1", "r2"]), (5, ["r1", "r2", "r3"])],
)
def test_runs_start_in_queue_order_up_to_max_active_runs(
    max_active: int, started: list[str]
) -> None:
    spec = dag("d", max_active)
    admission = Admission()
    for run_id in ("r1", "r2", "r3"):
        admission.enqueue(run(spec, run_id))
    assert ids(admission.admit("d")) == started
    assert admission.admit("d") == []  # nothing more until one finishes
    assert ids(admission.states()) == ["r1", "r2", "r3"]


def test_a_finished_run_frees_its_slot_for_the_next_in_line() -> None:
    spec = dag("d")
    admission = Admission()
    first, second = run(spec, "r1"), run(spec, "r2")
    admission.enqueue(first)
    admission.enqueue(second)
    assert admission.admit("d") == [first]
    assert admission.running("r1") is first
    admission.finished(first)
    assert admission.running("r1") is None
    assert admission.admit("d") == [second]
    # running first, then queued, then remembered finished runs
    assert ids(admission.states()) == ["r2", "r1"]


def test_dags_do_not_wait_for_each_other() -> None:
    a, b = dag("a"), dag("b")
    admission = Admission()
    admission.enqueue(run(a, "a1"))
    admission.enqueue(run(a, "a2"))
    admission.enqueue(run(b, "b1"))
    assert ids(admission.admit("a")) == ["a1"]
    assert ids(admission.admit("b")) == ["b1"]
    assert ids(admission.states({"b"})) == ["b1"]


def test_a_queued_or_running_id_is_a_duplicate_run() -> None:
    spec = dag("d")
    admission = Admission()
    admission.enqueue(run(spec, "r1"))
    with pytest.raises(DaemonError) as err:
        admission.enqueue(run(spec, "r1"))
    assert err.value.code == "duplicate_run"
    admission.admit("d")
    with pytest.raises(DaemonError) as err:
        admission.check_new("r1")
    assert err.value.code == "duplicate_run"


def test_a_queued_run_can_be_taken_out() -> None:
    spec = dag("d")
    admission = Admission()
    admission.enqueue(run(spec, "r1"))
    admission.enqueue(run(spec, "r2"))
    admission.admit("d")
    assert admission.remove_queued("r1") is None  # running, not queued
    removed = admission.remove_queued("r2")
    assert removed is not None and removed.run_id == "r2"
    assert not admission.queued_or_running("r2")
    assert ids(admission.drain()) == []


def test_drain_empties_every_queue_oldest_first() -> None:
    a, b = dag("a"), dag("b")
    admission = Admission()
    for state in (run(a, "a1"), run(a, "a2"), run(b, "b1")):
        admission.enqueue(state)
    admission.admit("a")
    assert ids(admission.drain()) == ["a2", "b1"]
    assert ids(admission.states()) == ["a1"]


def test_the_memory_keeps_the_newest_finished_runs() -> None:
    spec = dag("d")
    admission = Admission(remember=2)
    for run_id in ("r1", "r2", "r3"):
        admission.remember(run(spec, run_id))
    assert ids(admission.states()) == ["r2", "r3"]
    recalled = admission.recall("r2")
    assert recalled is not None and recalled.run_id == "r2"
    assert admission.recall("r2") is None  # taken out
    assert admission.recall("r1") is None  # forgotten


def test_a_retry_reserves_its_run_id() -> None:
    spec = dag("d")
    admission = Admission()
    with admission.retrying("r1"):
        with pytest.raises(DaemonError) as err, admission.retrying("r1"):
            pass
        assert err.value.code == "not_finished"
    with admission.retrying("r1"):  # free again once the first block ended
        pass
    admission.enqueue(run(spec, "r1"))
    with pytest.raises(DaemonError) as err, admission.retrying("r1"):
        pass
    assert err.value.code == "not_finished"


def test_max_active_runs_is_the_queued_runs_own() -> None:
    # A reload may change the DAG while runs wait: each run keeps the spec it was queued with.
    admission = Admission()
    admission.enqueue(run(dag("d", 1), "r1"))
    admission.enqueue(run(dag("d", 1), "r2"))
    admission.enqueue(run(dag("d", 3), "r3"))
    assert ids(admission.admit("d")) == ["r1"]
    assert admission.states()[0].status is RunStatus.QUEUED


def test_a_given_limit_overrides_the_one_the_runs_were_queued_with() -> None:
    # Issue 10, item 8: the daemon passes the current definition's max_active_runs.
    spec = dag("d", 1)
    admission = Admission()
    for run_id in ("r1", "r2", "r3", "r4"):
        admission.enqueue(run(spec, run_id))
    assert admission.waiting_dags() == ["d"]
    assert ids(admission.admit("d", 3)) == ["r1", "r2", "r3"]  # raised: three at once
    assert admission.admit("d", 1) == []  # lowered: none while three run
    admission.finished(admission.states()[0])
    admission.finished(admission.states()[0])
    assert admission.admit("d", 1) == []  # two still run: the fourth waits
    admission.finished(admission.states()[0])
    assert ids(admission.admit("d", 1)) == ["r4"]
    assert admission.waiting_dags() == []
