"""Telling systemd (or any service manager speaking its notify protocol) how `dagd serve` is
doing: `READY=1` once it listens, `STOPPING=1` when it starts shutting down (docs/deploy.md).

The protocol (sd_notify(3)): the manager puts the path of a Unix datagram socket in
`$NOTIFY_SOCKET` ("@name" for Linux's abstract namespace), and the service sends
newline-separated `KEY=value` assignments to it, one datagram each time. Without the variable
dagd is not run as a `Type=notify` service and nothing is sent.

A notification is never worth failing or stalling the daemon for: the socket is non-blocking,
errors are logged (once per socket, at WARNING) and swallowed.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("dagd.daemon.readiness")

#: The NOTIFY_SOCKET values a warning was logged for (one per value and process).
_warned: set[str] = set()


def notify(state: str) -> bool:
    """Send `state` (for example "READY=1", or "STOPPING=1"; several assignments separated by
    newlines) to `$NOTIFY_SOCKET`. Returns True if the datagram was sent, False if there is
    no such variable or sending failed. Never raises: the first failure with a socket is
    logged as a warning naming it and the error, later ones are not."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]  # abstract namespace
    elif address.startswith("/"):
        target = address
    else:
        _warn(address, "only Unix socket paths and @abstract names are supported")
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # A full queue on the manager's side must not hold up the event loop.
            sock.setblocking(False)
            sock.sendto(state.encode(), target)
    except OSError as exc:
        _warn(address, exc.strerror or str(exc))
        return False
    return True


def _warn(address: str, why: str) -> None:
    if address not in _warned:
        _warned.add(address)
        log.warning(
            "cannot notify the service manager through NOTIFY_SOCKET=%s (%s); dagd runs on,"
            " but a Type=notify unit will not see it ready",
            address,
            why,
        )
