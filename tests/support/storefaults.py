"""A store whose disk fails on demand: its write connection raises SQLite's `database or
disk is full` at COMMIT while failures are left (tests/daemon/test_storage_disk.py fills a real
tmpfs instead, where the tests run as root)."""

from __future__ import annotations

import sqlite3
from typing import Any

import trio

from dagd.daemon.store import Store

FULL = "database or disk is full"


class FailingConnection:
    """The store's write connection, failing at COMMIT as SQLite does on a full disk (the
    transaction is rolled back by SQLite itself) while `failures` is above zero."""

    def __init__(self, conn: sqlite3.Connection, failures: int = 0) -> None:
        self.conn = conn
        self.failures = failures
        self.commits: list[float] = []  # trio time of every COMMIT tried

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.commits.append(trio.current_time())
            if self.failures > 0:
                self.failures -= 1
                self.conn.execute("ROLLBACK")  # SQLite rolls back after SQLITE_FULL
                raise sqlite3.OperationalError(FULL)
        return self.conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        self.conn.close()


def failing(store: Store, failures: int) -> FailingConnection:
    conn = FailingConnection(store._wconn, failures)  # type: ignore[arg-type]
    store._wconn = conn  # type: ignore[assignment]
    return conn
