"""systemd readiness through $NOTIFY_SOCKET, against real Unix datagram sockets (and a real
`dagd serve`)."""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from clienthelp import DaemonProc

from dagd.daemon.readiness import notify


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """A service manager's notify socket: a Unix datagram socket bound to a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_states_reach_a_socket_path(
    manager: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", manager.getsockname())
    assert notify("READY=1")
    assert notify("STOPPING=1\nSTATUS=shutting down")
    assert manager.recv(4096) == b"READY=1"
    assert manager.recv(4096) == b"STOPPING=1\nSTATUS=shutting down"


def test_states_reach_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dagd-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_nothing_is_sent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert not notify("READY=1")
    assert caplog.records == []


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("{tmp_path}/gone/notify", "No such file or directory"),
        ("vsock:2:9999", "only Unix socket paths and @abstract names are supported"),
    ],
)
def test_a_socket_that_cannot_be_reached_is_one_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    address: str,
    why: str,
) -> None:
    address = address.format(tmp_path=tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    caplog.set_level(logging.WARNING, logger="dagd.daemon.readiness")
    assert not notify("READY=1")
    assert not notify("STOPPING=1")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert f"NOTIFY_SOCKET={address} ({why})" in record.getMessage()


def test_a_full_manager_queue_does_not_block(
    manager: socket.socket, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody reads the socket: once its queue is full, notify returns at once."""
    monkeypatch.setenv("NOTIFY_SOCKET", manager.getsockname())
    caplog.set_level(logging.WARNING, logger="dagd.daemon.readiness")
    sent = 0
    while notify("STATUS=" + "x" * 1000):
        sent += 1
        assert sent < 100_000, "the queue never filled up"
    assert sent > 0
    assert "Resource temporarily unavailable" in caplog.records[0].getMessage()


def test_dagd_serve_is_ready_once_it_listens_and_says_when_it_stops(
    tmp_path: Path, manager: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `dagd serve` under a service manager: READY=1 once the endpoint listens, then
    STOPPING=1 when SIGTERM starts its shutdown, and it exits 0."""
    monkeypatch.setenv("NOTIFY_SOCKET", manager.getsockname())
    with DaemonProc(tmp_path / "service", {"quick": "[steps.a]\ncommand = 'true'\n"}) as daemon:
        daemon.start()
        assert manager.recv(4096) == b"READY=1"
        assert "listening on ws://" in daemon.output()
        assert daemon.stop(signal.SIGTERM) == 0
        assert manager.recv(4096) == b"STOPPING=1"
        assert "dagd stopped" in daemon.output()
