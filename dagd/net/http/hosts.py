"""Which names dagd answers to, and when a browser page counts as dagd's own.

A DNS-rebinding page (evil.example resolving first to the attacker, then to 127.0.0.1) runs in
the browser with origin `http://evil.example:3000` and sends `Host: evil.example:3000`: its
requests reach dagd although their origin is foreign. dagd therefore serves plain HTTP only to
requests whose `Host` names dagd ("served names"), and counts an `Origin` as the page's own only
when it equals the request's `scheme://Host` *and* that Host is a served name.

Served names: the configured `[server] host` (unless it is a wildcard: 0.0.0.0, ::), the
loopback names 127.0.0.1, localhost and ::1 when dagd listens on a loopback or wildcard
address, and every `[server] hosts` entry. Names compare case-insensitively, without a
trailing dot; the port is not compared (a rebinding page uses dagd's port anyway).
"""

from __future__ import annotations

import ipaddress

from dagd.core.config import ServerConfig

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def served_names(config: ServerConfig) -> frozenset[str]:
    """The names a request's Host may give (lower-case, no brackets, no trailing dot)."""
    names = {_normal(name) for name in config.hosts}
    host = _normal(config.host)
    if host not in WILDCARD_HOSTS:
        names.add(host)
    if host in WILDCARD_HOSTS or _is_loopback(host):
        names.update(LOOPBACK_NAMES)
    return frozenset(names)


def host_name(host: str) -> str | None:
    """The name part of a Host header ("[::1]:3000" -> "::1", "Dagd.Example.com." ->
    "dagd.example.com"); None if it is not `name`, `name:port` or `[v6]:port`."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[1:end], host[end + 1 :]
    else:
        name, colon, port = host.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return _normal(name) or None


def is_served(host: str | None, served: frozenset[str]) -> bool:
    """Does the Host header `host` (None: absent) name dagd?"""
    if host is None:
        return False
    name = host_name(host)
    return name is not None and name in served


def is_own_origin(origin: str, host: str | None, scheme: str, served: frozenset[str]) -> bool:
    """Is `origin` the page's own: `scheme://Host` of this very request ("http" or "https"),
    with a served Host? Compared case-insensitively."""
    if host is None or not is_served(host, served):
        return False
    return origin.lower() == f"{scheme}://{host.strip().lower()}"


def _normal(name: str) -> str:
    return name.strip().lower().removesuffix(".")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
