"""Pools seen from outside: `dagd validate` and the daemon's reload refuse a pool config.toml
does not have; `dagd pools`, `dagd show` and GET /metrics show a pool in use and its queue,
with a real daemon and real step processes."""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path

import pytest
from clienthelp import serving, wait_for
from clihelp import cli_in, invoke, start_run

from dagd.cli.main import main

POOLS = "[pools]\nwarehouse = 1\ngpu = 2\n"

# The step holds its slot until the test creates the file `go` (the daemon's working folder).
LOAD = """
[steps.load]
command = "while [ ! -f go ]; do sleep 0.02; done"
pool = "warehouse"
"""

UNKNOWN = """
[steps.load]
command = "true"
pool = "warehuose"
[steps.train]
command = "true"
pool = "gpu"
pool_slots = 3
"""


def test_validate_refuses_an_unknown_pool_and_too_many_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "bad.toml").write_text(UNKNOWN)
    (tmp_path / "config.toml").write_text(POOLS)
    cli = cli_in(tmp_path, monkeypatch)
    result = cli.invoke(main, ["validate"])
    assert result.exit_code == 1, result.output
    assert "step 'load': field 'pool': no pool 'warehuose' is configured (did you mean " in (
        result.stdout + result.stderr
    )
    assert "pool_slots 3 is more than pool 'gpu' has (2)" in result.stdout + result.stderr
    (tmp_path / "dags" / "bad.toml").write_text(LOAD)
    result = cli.invoke(main, ["validate"])
    assert result.exit_code == 0, result.output


def test_pools_command_show_and_metrics_while_a_step_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "d"
    top = f'reload_interval = "0.1s"\n{POOLS}'
    with serving(root, {"etl": LOAD, "etl2": LOAD}, top=top) as daemon:
        cli = cli_in(root, monkeypatch)

        def warehouse() -> list[str]:
            out = invoke(cli, "pools").stdout
            return next((ln.split() for ln in out.splitlines() if ln.startswith("warehouse")), [])

        first = start_run(daemon, "etl")
        wait_for(lambda: warehouse()[2:] == ["1", "0"], what="the slot held")
        second = start_run(daemon, "etl2")
        wait_for(lambda: warehouse()[2:] == ["1", "1"], what="the second step to wait")

        table = invoke(cli, "pools").stdout.splitlines()
        assert table[0].split() == ["POOL", "SLOTS", "IN", "USE", "WAITING"]
        assert [line.split() for line in table[1:]] == [
            ["gpu", "2", "0", "0"],
            ["warehouse", "1", "1", "1"],
        ]
        answer = json.loads(invoke(cli, "pools", "--json").stdout)
        assert answer["pools"][1] == {
            "name": "warehouse",
            "slots": 1,
            "inUse": 1,
            "waiting": 1,
            "waitingSlots": 1,
        }
        shown = invoke(cli, "show", second).stdout
        load = next(line for line in shown.splitlines() if line.lstrip().startswith("load"))
        assert "pending" in load
        assert "waiting for: pool warehouse" in load
        assert load.split()[1:3] == ["pending", "0"]  # no attempt made yet

        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'dagd_pool_slots{pool="warehouse"} 1.0' in metrics
        assert 'dagd_pool_slots_in_use{pool="warehouse"} 1.0' in metrics
        assert 'dagd_pool_waiting_steps{pool="warehouse"} 1.0' in metrics
        assert 'dagd_pool_slots_in_use{pool="gpu"} 0.0' in metrics

        # The reload refuses a DAG file naming a pool that is not configured.
        (root / "dags" / "bad.toml").write_text(textwrap.dedent(UNKNOWN))
        wait_for(
            lambda: "no pool 'warehuose' is configured" in invoke(cli, "dags").stderr,
            what="the reload to refuse bad.toml",
        )
        (root / "go").touch()
        for run in (first, second):
            wait_for(lambda r=run: daemon.run_statuses().get(r) == "success", what=run)
        assert warehouse()[2:] == ["0", "0"]
