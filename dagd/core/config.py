"""config.toml -> Config. Every key has a default that works out of the box; unknown keys are
errors that name the key (with a suggestion), and relative paths resolve against the folder of
the config file, so the daemon behaves the same whatever directory it is started from.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from dagd.core.spec import parse_duration

ROLES = ("read", "operate")


class ConfigError(ValueError):
    """config.toml cannot be used; the message says which key and why."""


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


@attrs.frozen
class Config:
    """The daemon's settings (docs/config.md describes each key; times are seconds). Build
    one with `parse_config(text, base)`; relative paths are resolved against `base`."""

    dags_dir: Path = Path("dags")
    state_dir: Path = Path("state")
    max_parallel_steps: int = 16
    progress_interval: float = 1.0
    kill_grace: float = 5.0  # SIGTERM -> SIGKILL for a step's process group
    reload_interval: float = 2.0
    event_retention_count: int = 1_000_000
    event_retention_age: float | None = 30 * 86400.0
    server: ServerConfig = ServerConfig()
    tokens: tuple[TokenSpec, ...] = ()
    source: Path | None = None

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
}
_TOKEN = {"role": "role", "name": "str", "token": "str", "sha256": "str", "env": "str"}


def _check_keys(table: dict[str, Any], allowed: dict[str, str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def _value(kind: str, value: Any, key: str, base: Path) -> Any:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if optional and value in ("", None):
        return None
    ok = True
    if kind == "path":
        ok = isinstance(value, str)
        if ok:
            path = Path(value).expanduser()
            return path if path.is_absolute() else base / path
    elif kind == "duration":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    elif kind in ("posint", "port"):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ok = ok and (value <= 65535 if kind == "port" else value >= 1)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "strlist":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif kind == "role":
        ok = value in ROLES
    if not ok:
        raise ConfigError(f"{key}: invalid value {value!r} (expected {kind})")
    return value


def parse_config(text: str, base: Path, source: Path | None = None) -> Config:
    """Read config text; relative paths resolve against `base` (the config file's folder).
    Durations are seconds (or '90s', '5m', ...). Raises ConfigError naming the key and why."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    where = str(source or "config")
    server_raw = doc.pop("server", {})
    auth_raw = doc.pop("auth", {})
    _check_keys(doc, {**_TOP, "server": "", "auth": ""}, where)
    top = {k: _value(_TOP[k], v, k, base) for k, v in doc.items()}
    top.setdefault("dags_dir", base / "dags")
    top.setdefault("state_dir", base / "state")
    if not isinstance(server_raw, dict) or not isinstance(auth_raw, dict):
        raise ConfigError(f"{where}: [server] and [auth] must be tables")
    _check_keys(server_raw, _SERVER, f"{where} [server]")
    server = ServerConfig(
        **{k: _value(_SERVER[k], v, f"server.{k}", base) for k, v in server_raw.items()}
    )
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ConfigError(f"{where}: set both server.tls_cert and server.tls_key, or neither")
    _check_keys(auth_raw, {"tokens": ""}, f"{where} [auth]")
    tokens = []
    for i, raw in enumerate(auth_raw.get("tokens", [])):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: auth.tokens[{i}] must be a table")
        _check_keys(raw, _TOKEN, f"{where} [[auth.tokens]] #{i + 1}")
        spec = TokenSpec(
            **{k: _value(_TOKEN[k], v, f"auth.tokens.{k}", base) for k, v in raw.items()}
        )
        if spec.token is not None and len(spec.token) < 8:
            raise ConfigError(f"{where}: auth.tokens[{i}]: a token must be at least 8 characters")
        if sum(x is not None for x in (spec.token, spec.sha256, spec.env)) != 1:
            raise ConfigError(
                f"{where}: auth.tokens[{i}] needs exactly one of 'token', 'sha256' or 'env'"
            )
        if spec.sha256 is not None and not _is_sha256(spec.sha256):
            raise ConfigError(
                f"{where}: auth.tokens[{i}].sha256: must be 64 hex digits (a SHA-256 digest)"
            )
        tokens.append(spec)
    return Config(**top, server=server, tokens=tuple(tokens), source=source)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def default_config(base: Path) -> Config:
    """The configuration used when there is no config file: everything relative to `base`."""
    return parse_config("", base)
