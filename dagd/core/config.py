"""config.toml -> Config. Every key has a default that works out of the box; unknown keys are
errors that name the key (with a suggestion), and relative paths resolve against the folder of
the config file, so the daemon behaves the same whatever directory it is started from.

`parse_config` raises ConfigError and nothing else, whatever the text holds, listing every
problem of the file at once (as DAG files do); numbers are bounded (`RANGES`, durations at most
`MAX_DURATION`, `event_retention_age` at most `MAX_RETENTION_AGE`, `MAX_KEEP_DAYS`), and each
problem is one printable line that starts with the file.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from dagd.core.spec import MAX_DURATION, POOL_RE, decode_text, parse_duration
from dagd.core.text import one_line, show

ROLES = ("read", "operate")

#: Integer keys and the ranges they must be in (both ends included).
RANGES: dict[str, tuple[int, int]] = {
    "max_parallel_steps": (1, 10_000),
    "event_retention_count": (1, 10**12),
    "server.port": (0, 65535),
    "server.max_connections": (1, 1_000_000),
    "server.max_message_size": (1, 64 * 1024 * 1024),
    "server.send_buffer": (1, 1_000_000),
    "server.rate_limit": (1, 1_000_000),
    "server.max_header_bytes": (1024, 1024 * 1024),
    "server.max_body_bytes": (1, 64 * 1024 * 1024),
    "history.keep_runs": (1, 10**9),
}
#: `[pools]`: the slots one pool may have (both ends included).
POOL_SIZES = (1, 10_000)
#: `[history] keep_days`: more than 0 and at most 100 years (as `MAX_RETENTION_AGE`).
MAX_KEEP_DAYS = 36500
#: `event_retention_age` may be longer than other durations: 100 years, in seconds.
MAX_RETENTION_AGE = 36500 * 86400.0


class ConfigError(ValueError):
    """config.toml cannot be used. `problems` lists every problem found, each one line that
    starts with the file and names the key; `str()` is those lines joined by newlines."""

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        super().__init__("\n".join(problems))


@attrs.frozen
class TokenSpec:
    """One accepted token: given literally, as a SHA-256 hex digest, or by environment variable."""

    role: str = "operate"
    name: str = ""
    token: str | None = None
    sha256: str | None = None
    env: str | None = None


@attrs.frozen
class ServerConfig:
    """The `[server]` table: the listener, its limits (bytes, messages, seconds) and TLS."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 3000
    origins: tuple[str, ...] = ()
    #: Further names (besides host and the loopback names) that clients reach dagd by, e.g.
    #: "dagd.example.com": plain HTTP needs a served Host; a page's own origin then may open
    #: the WebSocket (docs/http.md).
    hosts: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_connections: int = 1000
    max_message_size: int = 65536  # bytes
    send_buffer: int = 1024  # messages queued per client before it is closed as too slow
    send_timeout: float = 10.0
    heartbeat_interval: float = 30.0
    auth_timeout: float = 10.0
    handshake_timeout: float = 5.0
    rate_limit: int = 100  # client messages per second (burst: twice that)
    ping_interval: float = 20.0
    max_header_bytes: int = 16384  # a request's head (request line and headers)
    max_body_bytes: int = 1048576  # a plain HTTP request's body
    keepalive_timeout: float = 60.0  # an idle HTTP connection is closed after this
    metrics_auth: bool = False  # GET /metrics asks for a bearer token (docs/http.md)


@attrs.frozen
class DaskExecutorConfig:
    """The `[executors.dask]` table: the Dask scheduler that runs steps with
    `executor = "dask"` (docs/dask.md). Times are seconds."""

    address: str
    connect_timeout: float = 10.0
    # Dask's TLS settings (a `distributed.security.Security` built from these paths).
    tls_ca_file: Path | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None


@attrs.frozen
class HistoryConfig:
    """The `[history]` table: how long finished runs are kept, with their steps, events and
    log files. None: no limit of that kind."""

    keep_days: float | None = None  # days since the run ended
    keep_runs: int | None = None  # newest finished runs kept per DAG


@attrs.frozen
class Config:
    """The daemon's settings (docs/config.md describes each key; times are seconds). Build
    one with `parse_config(text, base)`; relative paths are resolved against `base`."""

    dags_dir: Path = Path("dags")
    state_dir: Path = Path("state")
    max_parallel_steps: int = 16
    progress_interval: float = 1.0
    kill_grace: float = 5.0  # SIGTERM -> SIGKILL for a step's process group
    # How long a cancelled run's lifecycle handlers may run (also at shutdown)
    handler_grace: float = 30.0
    reload_interval: float = 2.0
    event_retention_count: int = 1_000_000
    event_retention_age: float | None = 30 * 86400.0
    server: ServerConfig = ServerConfig()
    tokens: tuple[TokenSpec, ...] = ()
    dask: DaskExecutorConfig | None = None  # `[executors.dask]`; None: no Dask executor
    history: HistoryConfig = HistoryConfig()
    # `[pools]`: pool name -> slots, shared by every run of the daemon (docs/config.md).
    pools: Mapping[str, int] = attrs.field(factory=dict)
    source: Path | None = None

    @property
    def executor_names(self) -> tuple[str, ...]:
        """The executors a step may name (`executor = "..."` in a DAG file): "local" always,
        then each one configured under `[executors.<name>]`."""
        return ("local", "dask") if self.dask is not None else ("local",)

    @property
    def url(self) -> str:
        """The WebSocket URL clients use: `ws://host:port/api/v1/ws` (`wss` with TLS; an IPv6
        host in brackets)."""
        scheme = "wss" if self.server.tls_cert else "ws"
        host = self.server.host if ":" not in self.server.host else f"[{self.server.host}]"
        return f"{scheme}://{host}:{self.server.port}/api/v1/ws"

    @property
    def db_path(self) -> Path:
        """The SQLite history: `<state_dir>/dagd.sqlite3`."""
        return self.state_dir / "dagd.sqlite3"

    @property
    def log_dir(self) -> Path:
        """The step logs' root folder: `<state_dir>/logs`."""
        return self.state_dir / "logs"

    @property
    def secret_env_names(self) -> tuple[str, ...]:
        """The environment variables that hold dagd's own secrets, never passed to a step:
        DAGD_TOKEN (the `dagd` commands' token) and each `[[auth.tokens]]` `env`."""
        names = ["DAGD_TOKEN"]
        names += [spec.env for spec in self.tokens if spec.env and spec.env not in names]
        return tuple(names)

    def token_values(self, environ: Mapping[str, str]) -> list[str | None]:
        """Each `[[auth.tokens]]` entry's token read from `environ` where it names an `env`
        variable (None for the entries given as `token` or `sha256`), in order. Raises
        ConfigError naming the entry and the variable when one is unset or empty."""
        values: list[str | None] = []
        where = str(self.source or "config")
        for i, spec in enumerate(self.tokens):
            if spec.env is None:
                values.append(None)
                continue
            value = environ.get(spec.env)
            if not value:
                name = f" ({spec.name!r})" if spec.name else ""
                raise ConfigError(
                    f"{where}: auth.tokens[{i}]{name}: environment variable {spec.env} is not "
                    "set or empty; set it before starting dagd, or give the token as 'sha256'"
                )
            values.append(value)
        return values

    @property
    def token_file(self) -> Path:
        """The generated operate token of a daemon without configured tokens:
        `<state_dir>/token`."""
        return self.state_dir / "token"


_TOP = {
    "dags_dir": "path",
    "state_dir": "path",
    "max_parallel_steps": "posint",
    "progress_interval": "duration",
    "kill_grace": "duration",
    "handler_grace": "duration",
    "reload_interval": "duration",
    "event_retention_count": "posint",
    "event_retention_age": "duration?",
}
_SERVER = {
    "enabled": "bool",
    "host": "str",
    "port": "port",
    "origins": "strlist",
    "tls_cert": "path?",
    "tls_key": "path?",
    "max_connections": "posint",
    "max_message_size": "posint",
    "send_buffer": "posint",
    "send_timeout": "duration",
    "heartbeat_interval": "duration",
    "auth_timeout": "duration",
    "handshake_timeout": "duration",
    "rate_limit": "posint",
    "ping_interval": "duration",
    "hosts": "strlist",
    "max_header_bytes": "posint",
    "max_body_bytes": "posint",
    "keepalive_timeout": "duration",
    "metrics_auth": "bool",
}
_TOKEN = {"role": "role", "name": "str", "token": "str", "sha256": "str", "env": "str"}
_DASK = {
    "address": "address",
    "connect_timeout": "duration",
    "tls_ca_file": "path?",
    "tls_client_cert": "path?",
    "tls_client_key": "path?",
}
_HISTORY = {"keep_days": "days?", "keep_runs": "posint"}
#: The tables `[executors.<name>]` may configure ("local" needs no settings).
EXECUTOR_TABLES = {"dask": _DASK}
#: One label of a DNS name (RFC 1123: letters, digits, inner hyphens, at most 63).
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
#: A Dask scheduler address: `scheme://host:port` (tcp, tls, ...) or plain `host:port`.
_ADDRESS_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?[^\s/]+\Z")


class _Problem(Exception):
    """One problem with one key; the reader adds it to its list and goes on."""


class _Reader:
    """Reads the tables of one file, collecting every problem (`key: why`) instead of stopping
    at the first; `parse_config` adds the file to each."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def table(self, raw: object, name: str) -> dict[str, Any]:
        """`raw` if it is a table, else {} with a problem recorded for `[name]`."""
        if isinstance(raw, dict):
            return raw
        self.problems.append(f"{name}: must be a table ([{name}])")
        return {}

    def read(self, raw: dict[str, Any], kinds: dict[str, str], where: str) -> dict[str, Any]:
        """Each known key of `raw` read by its kind; unknown keys and bad values are recorded
        as problems and left out (their defaults stand). `where` is the table's name in
        messages ("" for the top level, else e.g. "server")."""
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in kinds:
                close = difflib.get_close_matches(key, list(kinds), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                # `[server]: ...` for a table, `auth.tokens[0]: ...` for an entry of a list.
                prefix = "" if not where else f"{where}: " if "[" in where else f"[{where}]: "
                self.problems.append(f"{prefix}unknown key {show(key)}{hint}")
                continue
            if not kinds[key]:
                continue  # a table, read on its own
            try:
                out[key] = _value(kinds[key], value, f"{where}.{key}" if where else key, self.base)
            except _Problem as exc:
                self.problems.append(str(exc))
        return out


def _value(kind: str, value: Any, key: str, base: Path) -> Any:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if optional and (value is None or value == ""):
        return None
    ok = True
    if kind == "path":
        ok = isinstance(value, str) and "\0" not in value
        if ok:
            try:
                path = Path(value).expanduser()
            except RuntimeError:  # "~user" of no user, or no home directory
                raise _Problem(f"{key}: cannot expand {show(value)}: no such home") from None
            return path if path.is_absolute() else base / path
    elif kind == "duration":
        maximum = MAX_RETENTION_AGE if key == "event_retention_age" else MAX_DURATION
        try:
            return parse_duration(value, maximum)
        except ValueError as exc:
            raise _Problem(f"{key}: {exc}") from None
    elif kind in ("posint", "port"):
        low, high = RANGES[key]
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not low <= value <= high:
            raise _Problem(f"{key}: must be from {low} to {high}, got {show(value)}")
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "strlist":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif kind == "role":
        ok = isinstance(value, str) and value in ROLES
    elif kind == "days":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not 0 < value <= MAX_KEEP_DAYS:  # also NaN and infinity
            raise _Problem(
                f"{key}: must be more than 0 and at most {MAX_KEEP_DAYS} days, got {show(value)}"
            )
        value = float(value) if ok else value
    elif kind == "address":
        ok = isinstance(value, str) and _ADDRESS_RE.match(value) is not None
    if not ok:
        expected = {
            "posint": "integer",
            "days": "a number of days",
            "path": "path without NUL",
            "role": " or ".join(ROLES),
            "address": "an address like 'tcp://10.0.0.5:8786'",
        }
        raise _Problem(f"{key}: invalid value {show(value)} (expected {expected.get(kind, kind)})")
    return value


def parse_config(text: str | bytes, base: Path, source: Path | None = None) -> Config:
    """Read config text (or the file's bytes: UTF-8, a byte-order mark is skipped); relative
    paths resolve against `base` (the config file's folder). Durations are seconds (or '90s',
    '5m', ...). Raises ConfigError, and never anything else, listing every problem found: one
    line each, `<source>: <key>: why` (`config` when there is no `source`)."""
    where = one_line(str(source or "config"))
    try:
        reader = _Reader(base)
        config = _parse_config(text, reader, source)
    except UnicodeDecodeError as exc:
        raise ConfigError(one_line(f"{where}: not UTF-8 text: {exc}")) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(one_line(f"{where}: not valid TOML: {exc}")) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except Exception as exc:  # any failure of this file is this file's error
        message = f"{where}: cannot be read ({type(exc).__name__}: {show(str(exc))})"
        raise ConfigError(one_line(message)) from None
    if reader.problems:
        raise ConfigError(*(one_line(f"{where}: {problem}") for problem in reader.problems))
    return config


_TABLES = {"server": "", "auth": "", "executors": "", "history": "", "pools": ""}


def _parse_config(text: str | bytes, r: _Reader, source: Path | None) -> Config:
    doc = tomllib.loads(decode_text(text))
    top = r.read(doc, {**_TOP, **_TABLES}, "")
    top.setdefault("dags_dir", r.base / "dags")
    top.setdefault("state_dir", r.base / "state")
    server = ServerConfig(**r.read(r.table(doc.get("server", {}), "server"), _SERVER, "server"))
    if (server.tls_cert is None) != (server.tls_key is None):
        r.problems.append("set both server.tls_cert and server.tls_key, or neither")
    for name in server.hosts:
        if not is_host_name(name):
            r.problems.append(
                f"server.hosts: {show(name)} is not a host name or IP address (no port, no scheme)"
            )
    auth = r.table(doc.get("auth", {}), "auth")
    r.read(auth, {"tokens": ""}, "auth")
    return Config(
        **top,
        server=server,
        tokens=_tokens(r, auth.get("tokens", [])),
        dask=_dask_config(r, r.table(doc.get("executors", {}), "executors")),
        history=HistoryConfig(
            **r.read(r.table(doc.get("history", {}), "history"), _HISTORY, "history")
        ),
        pools=_pools(r, r.table(doc.get("pools", {}), "pools")),
        source=source,
    )


def _pools(r: _Reader, raw: dict[str, Any]) -> dict[str, int]:
    """`[pools]`: name -> slots, each name a pool name and each size from 1 to 10,000."""
    low, high = POOL_SIZES
    pools = {}
    for name, size in raw.items():
        if not POOL_RE.match(name):
            r.problems.append(
                f"pools: {show(name)} is not a pool name (letters, digits, '_', '-', at most 64)"
            )
        elif isinstance(size, bool) or not isinstance(size, int):
            r.problems.append(f"pools.{name}: invalid value {show(size)} (expected integer slots)")
        elif not low <= size <= high:
            r.problems.append(f"pools.{name}: must be from {low} to {high}, got {show(size)}")
        else:
            pools[name] = size
    return pools


def _tokens(r: _Reader, raw_tokens: object) -> tuple[TokenSpec, ...]:
    """`[[auth.tokens]]` -> the entries that are right (the others are problems)."""
    if not isinstance(raw_tokens, list):
        r.problems.append("auth.tokens: must be a list of tables ([[auth.tokens]])")
        return ()
    tokens = []
    for i, raw in enumerate(raw_tokens):
        if not isinstance(raw, dict):
            r.problems.append(f"auth.tokens[{i}] must be a table")
            continue
        before = len(r.problems)
        values = r.read(raw, _TOKEN, f"auth.tokens[{i}]")
        spec = TokenSpec(**values)
        if spec.token is not None and len(spec.token) < 8:
            r.problems.append(f"auth.tokens[{i}]: a token must be at least 8 characters")
        if sum(k in raw for k in ("token", "sha256", "env")) != 1:
            r.problems.append(f"auth.tokens[{i}] needs exactly one of 'token', 'sha256' or 'env'")
        if spec.sha256 is not None and not _is_sha256(spec.sha256):
            r.problems.append(f"auth.tokens[{i}].sha256: must be 64 hex digits (a SHA-256 digest)")
        if len(r.problems) == before:
            tokens.append(spec)
    return tuple(tokens)


def _dask_config(r: _Reader, executors: dict[str, Any]) -> DaskExecutorConfig | None:
    """The `[executors]` table -> the Dask executor's settings (None: not configured, or
    with problems)."""
    for name in executors:
        if name not in EXECUTOR_TABLES:
            close = difflib.get_close_matches(name, list(EXECUTOR_TABLES), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known: dask"
            r.problems.append(f"executors: unknown executor {show(name)} ({hint})")
    if "dask" not in executors:
        return None
    before = len(r.problems)
    values = r.read(r.table(executors["dask"], "executors.dask"), _DASK, "executors.dask")
    if "address" not in values:
        if not any(p.startswith("executors.dask.address:") for p in r.problems[before:]):
            r.problems.append("executors.dask.address: missing (e.g. 'tcp://10.0.0.5:8786')")
        return None
    dask = DaskExecutorConfig(**values)
    if (dask.tls_client_cert is None) != (dask.tls_client_key is None):
        r.problems.append(
            "set both executors.dask.tls_client_cert and executors.dask.tls_client_key, or neither"
        )
    return dask if len(r.problems) == before else None


def is_host_name(text: str) -> bool:
    """Is `text` a DNS name (a trailing dot allowed) or an IP address (IPv6 without brackets),
    with no port? `[server] hosts` entries must be."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    labels = text.removesuffix(".").split(".")
    return len(text) <= 253 and all(_LABEL_RE.fullmatch(label) for label in labels)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def default_config(base: Path) -> Config:
    """The configuration used when there is no config file: everything relative to `base`."""
    return parse_config("", base)
