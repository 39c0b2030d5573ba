"""What the daemon keeps of its history: the event log's bounds (`event_retention_count`,
`event_retention_age`) and, under `[history]`, finished runs with their steps, events and log
files (docs/config.md)."""

from __future__ import annotations

import logging

from dagd.core.config import Config
from dagd.daemon.store import Store

log = logging.getLogger("dagd.daemon.retention")

#: Seconds between two rounds of pruning.
PRUNE_INTERVAL = 300.0


async def prune_once(store: Store, config: Config, now: float) -> int:
    """One round of retention as of `now` (Unix seconds): returns how many events went."""
    deleted = await store.prune(config.event_retention_count, config.event_retention_age, now)
    if deleted:
        log.info("event log retention: deleted %d old events", deleted)
    return deleted
