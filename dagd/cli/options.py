"""The options and helpers every `dagd` command shares: finding the config, the daemon's
address and token, and `NAME=VALUE` params.

The config file, first found: `--config`, `$DAGD_CONFIG`, `./config.toml`, then
`$XDG_CONFIG_HOME/dagd/config.toml` (`~/.config/dagd/config.toml` when XDG_CONFIG_HOME is
unset). Relative paths in it resolve against its own folder, so every command works from any
working directory once the config is found.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dagd.core.config import Config, ConfigError, default_config, parse_config

if TYPE_CHECKING:
    from dagd.cli.remote import Endpoint


def user_config_path() -> Path:
    """`$XDG_CONFIG_HOME/dagd/config.toml`, or `~/.config/dagd/config.toml` when the variable
    is unset or empty (the XDG base directory rule)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dagd" / "config.toml"


def find_config(path: Path | None) -> Path | None:
    """The config file to read: `path` (from --config or $DAGD_CONFIG, click fills in the
    variable), else ./config.toml, else the user's config file, else None (defaults)."""
    if path is not None:
        return path
    for candidate in (Path("config.toml"), user_config_path()):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None) -> Config:
    """The config `find_config` picks, parsed; the defaults (relative to the working
    directory) when there is none. Raises click.ClickException for a file that cannot be read
    or parsed (one line per problem, each naming the file)."""
    found = find_config(path)
    if found is None:
        return default_config(Path.cwd())
    try:
        data = found.read_bytes()  # parse_config decodes: a BOM or bad UTF-8 is its problem
    except OSError as exc:
        raise click.ClickException(f"cannot read config {found}: {exc.strerror}") from None
    try:
        return parse_config(data, found.resolve().parent, source=found)
    except ConfigError as exc:  # its lines start with the file
        raise click.ClickException(str(exc)) from None


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """`NAME=VALUE` options as a dict (a later NAME wins); raises click.BadParameter for a
    pair without `=` or without a name."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        params[name] = value
    return params


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DAGD_CONFIG",
    show_envvar=True,
    help="config.toml to use (default: ./config.toml, else $XDG_CONFIG_HOME/dagd/config.toml).",
)
params_option = click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a declared param (repeatable).",
)
dags_option = click.option(
    "--dags",
    "dags_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DAGD_DAGS",
    show_envvar=True,
    help="Folder of DAG files (default: dags_dir from the config, else ./dags).",
)
url_option = click.option(
    "--url",
    envvar="DAGD_URL",
    show_envvar=True,
    help="The daemon's WebSocket URL, ws://HOST:PORT/api/v1/ws (default: from the config).",
)
token_option = click.option(
    "--token",
    envvar="DAGD_TOKEN",
    show_envvar=True,
    help="Auth token (default: from the config, else the daemon's token file).",
)


def endpoint(config_path: Path | None, url: str | None, token: str | None) -> Endpoint:
    """Where the running daemon is and the token to use (`--url`/`--token` and their
    variables win over the config's); raises click.ClickException when the config cannot be
    read, the URL is not a WebSocket URL, or no token is found."""
    from dagd.cli.remote import resolve_endpoint

    return resolve_endpoint(load_config(config_path), url, token)
