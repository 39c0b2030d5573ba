"""The daemon as the network layer sees it: a narrow interface, and the values it hands out.

`dagd.net` imports this module and nothing else of the daemon layer (tests/test_layers.py holds
it to that), so the daemon's insides can change without touching the network code.
"""

from __future__ import annotations

from dagd.daemon.daemon import Daemon, DaemonError, DagInfo
from dagd.daemon.hub import Subscriber
from dagd.daemon.store import RunRecord, StoredEvent

__all__ = ["Daemon", "DaemonError", "DagInfo", "RunRecord", "StoredEvent", "Subscriber"]
