"""The options and helpers every `dagd` command shares: finding the config, the daemon's
address and token, and `NAME=VALUE` params."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from dagd.core.config import Config, ConfigError, default_config, parse_config

if TYPE_CHECKING:
    from dagd.cli.remote import Endpoint


def load_config(path: Path | None) -> Config:
    """The given config file, else ./config.toml if there is one, else the defaults."""
    if path is None:
        candidate = Path("config.toml")
        if not candidate.is_file():
            return default_config(Path.cwd())
        path = candidate
    try:
        data = path.read_bytes()  # parse_config decodes: a BOM or bad UTF-8 is its problem
    except OSError as exc:
        raise click.ClickException(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return parse_config(data, path.resolve().parent, source=path)
    except ConfigError as exc:  # its one line starts with the file
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
    help="config.toml to use (default: ./config.toml if present).",
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
    help="Folder of DAG files (default: dags_dir from the config, else ./dags).",
)


url_option = click.option("--url", envvar="DAGD_URL", help="Daemon URL (default: from the config).")
token_option = click.option(
    "--token",
    envvar="DAGD_TOKEN",
    help="Auth token (default: from the config, else the daemon's token file).",
)


def endpoint(config_path: Path | None, url: str | None, token: str | None) -> Endpoint:
    """Where the running daemon is and the token to use (`--url`/`--token` win over the
    config's); raises click.ClickException when the config cannot be read."""
    from dagd.cli.remote import resolve_endpoint

    return resolve_endpoint(load_config(config_path), url, token)
