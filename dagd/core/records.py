"""What the daemon keeps of a run, as a plain value: the store's row, the daemon's answer to
`list_runs`, and an entry of the protocol's `runs` answer alike (one class for all three)."""

from __future__ import annotations

import attrs

from dagd.core.model import RunStatus


@attrs.frozen
class RunRecord:
    """A run of a DAG: its latest status and when it was queued, started and ended (UNIX
    seconds; `started_at` and `ended_at` are None until the run started or ended). `params`
    are the bound params (declared defaults overlaid with what the trigger gave), as text."""

    dag_id: str
    run_id: str
    status: RunStatus
    params: dict[str, str]
    queued_at: float
    started_at: float | None
    ended_at: float | None
