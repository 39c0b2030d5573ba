"""dagd: a single-host workflow daemon on trio.

The public surface, for step authors and embedders: everything in `__all__` is kept working
across releases (tests/test_public_api.py holds the list). The pure pieces are imported
eagerly; the trio layers (`open_daemon`, `run_dag`, `StepContext`, `client`) load on first use,
so `import dagd` never pulls in trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagd.core.config import Config, parse_config
from dagd.core.events import (
    DagEvent,
    DagRunProgressEvent,
    DagRunStatusEvent,
    ErrorEvent,
    StepStatusEvent,
)
from dagd.core.model import DagSpec, RunStatus, StepSpec, StepStatus, TriggerRule
from dagd.core.runstate import RunState
from dagd.core.spec import DagSpecError, parse_dag

if TYPE_CHECKING:
    from dagd import client
    from dagd.app import open_daemon
    from dagd.daemon.daemon import Daemon, DaemonError, EventStream
    from dagd.daemon.statelock import StateDirError, StateDirInUse
    from dagd.runtime.engine import run_dag
    from dagd.runtime.executor import StepContext

_LAZY = {
    "open_daemon": "dagd.app",
    "Daemon": "dagd.daemon.daemon",
    "DaemonError": "dagd.daemon.daemon",
    "EventStream": "dagd.daemon.daemon",
    "StateDirError": "dagd.daemon.statelock",
    "StateDirInUse": "dagd.daemon.statelock",
    "StepContext": "dagd.runtime.executor",
    "run_dag": "dagd.runtime.engine",
}

__all__ = [
    "Config",
    "Daemon",
    "DaemonError",
    "DagEvent",
    "DagRunProgressEvent",
    "DagRunStatusEvent",
    "DagSpec",
    "DagSpecError",
    "ErrorEvent",
    "EventStream",
    "RunState",
    "RunStatus",
    "StateDirError",
    "StateDirInUse",
    "StepContext",
    "StepSpec",
    "StepStatus",
    "StepStatusEvent",
    "TriggerRule",
    "client",
    "open_daemon",
    "parse_config",
    "parse_dag",
    "run_dag",
]


def __getattr__(name: str) -> Any:
    import importlib

    if name == "client":
        return importlib.import_module("dagd.client")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dagd' has no attribute {name!r}")
