"""`dagd pause`, `unpause`, `backfill` and `schema` against a real daemon: what each prints, its
`--json` document in the protocol's shapes, its exit codes, and what the daemon did."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from clienthelp import DaemonProc, serving, wait_for
from clihelp import cli_in, invoke, start_run

from dagd.core.dagschema import dag_json_schema
from dagd.core.protocol.answers import BackfillAction, BackfillResult, Paused, Unpaused
from dagd.core.protocol.codec import parse_server_message
from dagd.core.timefmt import parse_iso

DAGS = {
    # Slots at 06:00 Berlin time on the 1st of a month: none falls during a test.
    "nightly": """
        schedule = "0 6 1 * *"
        timezone = "Europe/Berlin"
        max_active_runs = 2
        [params]
        env = "prod"
        [steps.work]
        command = 'echo "$DAGD_PARAM_ENV" > "out-$DAGD_RUN_ID"'
    """,
    # Fails until the file `fixed` exists in the daemon's folder.
    "flaky": """
        schedule = "0 0 1 * *"
        [steps.work]
        command = "test -e fixed"
    """,
    "manual": """
        [steps.work]
        command = "true"
    """,
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with serving(tmp_path_factory.mktemp("ops"), DAGS) as d:
        yield d


@pytest.fixture
def cli(daemon: DaemonProc, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    return cli_in(daemon.root, monkeypatch)


def show_dag_field(cli: CliRunner, dag_id: str, name: str) -> str:
    out = invoke(cli, "show", "--dag", dag_id).stdout
    match = re.search(rf"^{name} +(.*)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


# ------------------------------------------------------------------ pause / unpause


def test_pause_survives_a_restart_and_manual_runs_still_run(
    daemon: DaemonProc, cli: CliRunner
) -> None:
    result = invoke(cli, "pause", "nightly")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "paused nightly: its schedule does not fire until `dagd unpause nightly`; "
        "manual triggers and backfills still run\n"
    )
    assert show_dag_field(cli, "nightly", "paused") == "yes"
    assert show_dag_field(cli, "nightly", "next run").startswith("- (paused")
    # Pausing again is no error.
    assert invoke(cli, "pause", "nightly").exit_code == 0

    daemon.stop()
    daemon.start()
    daemon.wait_ready()
    assert show_dag_field(cli, "nightly", "paused") == "yes"
    run_id = start_run(daemon, "nightly")
    wait_for(lambda: daemon.run_statuses("nightly").get(run_id) == "success")

    result = invoke(cli, "unpause", "nightly")
    assert result.exit_code == 0, result.output
    match = re.fullmatch(
        r"unpaused nightly: its schedule fires again; next run (\S+)\n", result.stdout
    )
    assert match, result.stdout
    assert match.group(1) == show_dag_field(cli, "nightly", "next run")
    assert show_dag_field(cli, "nightly", "paused") == "no"


def test_pause_and_unpause_json(cli: CliRunner) -> None:
    result = invoke(cli, "pause", "manual", "--json")
    assert result.exit_code == 0, result.output
    assert parse_server_message(result.stdout) == Paused("manual")
    result = invoke(cli, "unpause", "manual", "--json")
    assert result.exit_code == 0, result.output
    assert parse_server_message(result.stdout) == Unpaused("manual", None)
    result = invoke(cli, "unpause", "manual")
    assert result.stdout == "unpaused manual (it has no schedule: it runs when triggered)\n"


@pytest.mark.parametrize("command", ["pause", "unpause"])
def test_pause_unknown_dag(cli: CliRunner, command: str) -> None:
    result = invoke(cli, command, "nightlly", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "unknown DAG 'nightlly': did you mean 'nightly'?" in result.stderr


# ------------------------------------------------------------------ backfill

SLOTS = [
    # 06:00 in Berlin on the first of each month: 05:00 UTC in winter, 04:00 in summer.
    ("2024-02-01T05:00:00.000Z", "scheduled__2024-02-01T05:00:00+00:00"),
    ("2024-03-01T05:00:00.000Z", "scheduled__2024-03-01T05:00:00+00:00"),
    ("2024-04-01T04:00:00.000Z", "scheduled__2024-04-01T04:00:00+00:00"),
]


def slot_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[1] == "" and lines[2].split() == ["SLOT", "(UTC)", "ACTION", "RUN", "REASON"]
    return [re.split(r" {2,}", line.strip()) for line in lines[3:]]


def test_backfill_dry_run_then_run_then_skip_then_rerun(daemon: DaemonProc, cli: CliRunner) -> None:
    args = ["backfill", "nightly", "--start", "2024-01-15", "--end", "2024-04-01"]
    result = invoke(cli, *args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "dry run of backfill nightly: 3 slots, nothing queued (would queue 3)"
    )
    rows = slot_rows(result.stdout)
    assert [(r[0], r[1]) for r in rows] == [(slot, "would queue") for slot, _ in SLOTS]
    assert all(r[2].startswith(prefix) for r, (_, prefix) in zip(rows, SLOTS, strict=True))
    run_ids = [r[2] for r in rows]
    assert not set(run_ids) & set(daemon.run_statuses("nightly"))  # nothing queued

    result = invoke(cli, *args, "-p", "env=staging")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "backfill nightly: 3 slots (3 queued)"
    assert [r[2] for r in slot_rows(result.stdout)] == run_ids  # the ids the dry run named
    wait_for(lambda: all(daemon.run_statuses("nightly").get(r) == "success" for r in run_ids))
    for run_id in run_ids:  # -p reached the steps
        assert (daemon.root / f"out-{run_id}").read_text() == "staging\n"

    result = invoke(cli, *args)
    assert result.stdout.splitlines()[0] == "backfill nightly: 3 slots (3 skipped)"
    for row in slot_rows(result.stdout):
        assert row[1] == "skipped"
        assert row[3] == "its run already succeeded (rerun runs it again)"

    result = invoke(cli, *args, "--rerun", "--json")
    assert result.exit_code == 0, result.output
    answer = parse_server_message(result.stdout)
    assert isinstance(answer, BackfillResult)
    assert answer.request_id is None and not answer.dry_run
    assert [(s.run_id, s.action) for s in answer.slots] == [
        (r, BackfillAction.RERUN) for r in run_ids
    ]
    assert [s.slot for s in answer.slots] == [parse_iso(slot) for slot, _ in SLOTS]


def test_backfill_retries_a_failed_slot(daemon: DaemonProc, cli: CliRunner) -> None:
    args = ["backfill", "flaky", "--start", "2023-05-01", "--end", "2023-05-01"]
    result = invoke(cli, *args)
    assert result.exit_code == 0, result.output
    [row] = slot_rows(result.stdout)
    run_id = row[2]
    assert row[1] == "queued"
    wait_for(lambda: daemon.run_statuses("flaky").get(run_id) == "failed")

    (daemon.root / "fixed").touch()
    result = invoke(cli, *args)
    assert result.stdout.splitlines()[0] == "backfill flaky: 1 slot (1 retried)"
    assert slot_rows(result.stdout) == [[row[0], "retried", run_id]]
    wait_for(lambda: daemon.run_statuses("flaky").get(run_id) == "success")


def test_backfill_of_an_empty_range(cli: CliRunner) -> None:
    result = invoke(cli, "backfill", "nightly", "--start", "2024-01-02", "--end", "2024-01-03")
    assert result.exit_code == 0, result.output
    assert result.stdout == "backfill nightly: no schedule slot in that range\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["manual", "--start", "2024-01-01", "--end", "2024-01-02"], "has no schedule"),
        (["nightly", "--start", "2024-02-01", "--end", "2024-01-01T00:00+00:00"], "before"),
        (
            ["nightly", "--start", "2024-01-01", "--end", "2024-01-02", "-p", "nope=1"],
            "has no param 'nope'",
        ),
        (["nightlyy", "--start", "2024-01-01", "--end", "2024-01-02"], "did you mean 'nightly'?"),
    ],
)
def test_backfill_refusals(cli: CliRunner, args: list[str], message: str) -> None:
    result = invoke(cli, "backfill", *args, "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["nightly", "--start", "2024-01-01"],
        ["nightly", "--start", "2024-01-01", "--end", "2024-01-02", "-p", "novalue"],
    ],
)
def test_backfill_usage_errors(cli: CliRunner, args: list[str]) -> None:
    assert invoke(cli, "backfill", *args).exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "soon", "--end", "2024-01-01"], "start 'soon' is not an ISO 8601"),
        (["--start", "2024-01-01", "--end", "2024-13-45"], "end '2024-13-45' is not an ISO 8601"),
    ],
)
def test_backfill_dates_that_cannot_be_read_are_usage_errors(
    cli: CliRunner, args: list[str], message: str
) -> None:
    result = invoke(cli, "backfill", "nightly", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr


# ------------------------------------------------------------------ schema


def test_schema_is_the_loaders_and_accepts_the_dags(daemon: DaemonProc, cli: CliRunner) -> None:
    result = invoke(cli, "schema")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('{\n  "')  # indented for people and diffs
    schema = json.loads(result.stdout)
    assert schema == dag_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(Path(daemon.root, "dags").glob("*.toml")):
        validator.validate(tomllib.loads(path.read_text()))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"steps": {"a": {"command": "true", "retires": 3}}})


# ------------------------------------------------------------------ roles

READ_TOKEN = "read-token-for-ops-tests"
OPERATE_TOKEN = "operate-token-for-ops-tests"


@pytest.fixture(scope="module")
def roles_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """A daemon with a read and an operate token in its config (and no token file of its
    own: the operate one is written where the helpers look for it)."""
    root = tmp_path_factory.mktemp("roles")
    tokens = "".join(
        f'[[auth.tokens]]\nname = "{role}"\nrole = "{role}"\ntoken = "{token}"\n'
        for role, token in (("read", READ_TOKEN), ("operate", OPERATE_TOKEN))
    )
    with DaemonProc(root, {"nightly": DAGS["nightly"]}, server=tokens) as d:
        d.state.mkdir()
        (d.state / "token").write_text(OPERATE_TOKEN)
        d.start()
        d.wait_ready()
        yield d


@pytest.mark.parametrize(
    ("args", "action"),
    [
        (["pause", "nightly"], "pause"),
        (["unpause", "nightly"], "unpause"),
        (["backfill", "nightly", "--start", "2024-01-01", "--end", "2024-03-01"], "backfill"),
    ],
)
def test_a_read_token_cannot_operate(
    roles_daemon: DaemonProc, cli: CliRunner, args: list[str], action: str
) -> None:
    where = ["--url", roles_daemon.url]
    result = invoke(cli, *args, *where, "--token", READ_TOKEN, "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"this token's role is 'read': it cannot {action}" in result.stderr
    assert roles_daemon.run_statuses() == {}
    # The read token may still look.
    result = invoke(cli, "show", "--dag", "nightly", *where, "--token", READ_TOKEN)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("dag               nightly\n")
    result = invoke(cli, *args, *where, "--token", OPERATE_TOKEN, "--json")
    assert result.exit_code == 0, result.output
