"""In-process `dagd` for CLI tests: a CliRunner that reads no DAGD_* variable of the test's
environment and runs from a daemon's folder (where its config.toml is); runs started through
the client library."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result
from clienthelp import DaemonProc

from dagd.cli.main import main
from dagd.client import connect


def cli_in(root: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner for commands run from `root`, with DAGD_URL, DAGD_TOKEN and DAGD_CONFIG
    unset (the config found is `root/config.toml`)."""
    for var in ("DAGD_URL", "DAGD_TOKEN", "DAGD_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(root)
    return CliRunner()


def invoke(cli: CliRunner, *args: str) -> Result:
    """`dagd ARGS` in this process; exceptions other than exits propagate."""
    return cli.invoke(main, list(args), catch_exceptions=False)


def start_run(daemon: DaemonProc, dag_id: str) -> str:
    """Trigger `dag_id` on `daemon` through the client library; its run id."""

    async def trigger() -> str:
        async with connect(daemon.url, daemon.token, [dag_id]) as client:
            return await client.trigger(dag_id)

    return trio.run(trigger)
