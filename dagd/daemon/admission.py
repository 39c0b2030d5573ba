"""Run admission: which runs wait, which may start, and which finished runs are kept at hand.

Rules this file keeps:
- Runs of one DAG start in the order they were queued, at most `max_active_runs` at a time:
  the limit the caller gives `admit` (the daemon: the DAG's *current* definition, so an edit
  applies to runs already waiting), else the run's own definition's. Lowering it stops no
  running run: the next ones wait until fewer than the new limit run. Runs of different DAGs
  never wait for each other.
- A run id is in at most one place: queued, running, or remembered as finished. Queueing a run
  id that is queued or running is a `duplicate_run`.
- The newest `remember` finished runs stay in memory (for retry and snapshots); older ones are
  rebuilt from the store when needed.
- A retry reserves its run id from the request until the run is queued again, so two retries
  of one run at once cannot both get through.

No I/O and no trio: the daemon starts what `admit` hands it and reports back with `finished`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager

from dagd.core.runstate import RunState
from dagd.daemon.errors import DaemonError


class Admission:
    """Queues per DAG, the running runs, and the memory of finished ones."""

    def __init__(self, remember: int = 200) -> None:
        self._remember = remember
        self._queues: dict[str, deque[RunState]] = {}
        self._running: dict[str, RunState] = {}  # by run id, in start order
        self._running_per_dag: dict[str, int] = {}
        self._recent: OrderedDict[str, RunState] = OrderedDict()  # finished, oldest first
        self._retrying: set[str] = set()

    # ------------------------------------------------------------- queueing

    def queued_or_running(self, run_id: str) -> bool:
        """Is `run_id` waiting for a slot or running?"""
        return run_id in self._running or any(
            s.run_id == run_id for q in self._queues.values() for s in q
        )

    def check_new(self, run_id: str) -> None:
        """Raises DaemonError('duplicate_run') if `run_id` is queued or running."""
        if self.queued_or_running(run_id):
            raise DaemonError("duplicate_run", f"run {run_id} is already queued or running")

    def enqueue(self, state: RunState) -> None:
        """Put a run at the end of its DAG's queue (a new run, or a finished one `recall`ed for
        a retry). Raises DaemonError('duplicate_run') if its id is queued or running."""
        self.check_new(state.run_id)
        self._queues.setdefault(state.dag.id, deque()).append(state)

    def admit(self, dag_id: str, max_active_runs: int | None = None) -> list[RunState]:
        """Take the queued runs of `dag_id` that may start now, oldest first, while fewer than
        `max_active_runs` of its runs run (None: the first waiting run's own definition's
        limit); they count as running until `finished`."""
        queue = self._queues.get(dag_id)
        started: list[RunState] = []
        while queue:
            state = queue[0]
            limit = state.dag.max_active_runs if max_active_runs is None else max_active_runs
            if self._running_per_dag.get(dag_id, 0) >= limit:
                break
            queue.popleft()
            self._running[state.run_id] = state
            self._running_per_dag[dag_id] = self._running_per_dag.get(dag_id, 0) + 1
            started.append(state)
        return started

    def finished(self, state: RunState) -> None:
        """A run handed out by `admit` has ended: its slot is free, and it is remembered."""
        del self._running[state.run_id]
        self._running_per_dag[state.dag.id] -= 1
        self.remember(state)

    def waiting_dags(self) -> list[str]:
        """The ids of the DAGs that have runs waiting for a slot."""
        return [dag_id for dag_id, queue in self._queues.items() if queue]

    def remove_queued(self, run_id: str) -> RunState | None:
        """Take a waiting run out of its queue (to cancel it); None if it is not queued."""
        for queue in self._queues.values():
            for state in queue:
                if state.run_id == run_id:
                    queue.remove(state)
                    return state
        return None

    def drain(self) -> list[RunState]:
        """Take every waiting run out of the queues, DAG by DAG, oldest first (at shutdown)."""
        drained = [s for q in self._queues.values() for s in q]
        for queue in self._queues.values():
            queue.clear()
        return drained

    # ------------------------------------------------------- finished runs

    def remember(self, state: RunState) -> None:
        """Keep a finished run at hand, dropping the oldest beyond the limit."""
        self._recent[state.run_id] = state
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)

    def recall(self, run_id: str) -> RunState | None:
        """A remembered finished run, taken out of the memory (`remember` puts it back)."""
        return self._recent.pop(run_id, None)

    @contextmanager
    def retrying(self, run_id: str) -> Iterator[None]:
        """Reserve `run_id` for one retry for the duration of the block. Raises
        DaemonError('not_finished') if it is queued, running, or already being retried."""
        if run_id in self._retrying or self.queued_or_running(run_id):
            raise DaemonError("not_finished", f"run {run_id} has not finished yet")
        self._retrying.add(run_id)
        try:
            yield
        finally:
            self._retrying.discard(run_id)

    # -------------------------------------------------------------- queries

    def states(self, dag_ids: set[str] | None = None) -> list[RunState]:
        """Running runs (in start order), then queued ones, then remembered finished ones
        (oldest first), of the given DAGs (None: all)."""
        states = list(self._running.values())
        states += [s for q in self._queues.values() for s in q]
        states += list(self._recent.values())
        return [s for s in states if dag_ids is None or s.dag.id in dag_ids]

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(queued, running) runs by DAG id, DAGs with none left out. Costs one step per DAG
        with runs, whatever the number of runs."""
        queued = {dag_id: len(queue) for dag_id, queue in self._queues.items() if queue}
        running = {dag_id: n for dag_id, n in self._running_per_dag.items() if n}
        return queued, running

    def running(self, run_id: str) -> RunState | None:
        """The running run with this id, or None."""
        return self._running.get(run_id)

    def find(self, run_id: str) -> RunState | None:
        """The run with this id if it is in memory: running, queued, or remembered as
        finished; else None (it may still be in the store)."""
        found = self._running.get(run_id) or self._recent.get(run_id)
        if found is not None:
            return found
        for queue in self._queues.values():
            for state in queue:
                if state.run_id == run_id:
                    return state
        return None


__all__ = ["Admission"]
