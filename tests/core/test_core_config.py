"""config.toml -> Config: defaults, paths, the bounds of every number, and one-line errors that
start with the file. (Random documents and bytes: tests/core/test_hostile_input.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from dagd.core.config import (
    RANGES,
    ConfigError,
    HistoryConfig,
    default_config,
    parse_config,
)

BASE = Path("/srv/dagd")
SOURCE = Path("/srv/dagd/config.toml")


def error_of(text: str | bytes, source: Path | None = SOURCE) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, BASE, source=source)
    message = str(caught.value)
    assert "\n" not in message  # one problem: one line
    return message


def test_defaults_and_relative_paths() -> None:
    config = default_config(BASE)
    assert (config.dags_dir, config.state_dir) == (BASE / "dags", BASE / "state")
    config = parse_config('dags_dir = "d"\nstate_dir = "/abs"\n', BASE)
    assert (config.dags_dir, config.state_dir) == (BASE / "d", Path("/abs"))


@pytest.mark.parametrize(("key", "bounds"), sorted(RANGES.items()))
def test_each_integer_accepts_its_range_and_refuses_beyond(
    key: str, bounds: tuple[int, int]
) -> None:
    table, _, name = key.rpartition(".")

    def text(value: int) -> str:
        return f"[{table}]\n{name} = {value}\n" if table else f"{name} = {value}\n"

    low, high = bounds
    for value in (low, high):
        config = parse_config(text(value), BASE)
        assert getattr(getattr(config, table) if table else config, name) == value
    for value in (low - 1, high + 1, 10**400):
        message = error_of(text(value))
        assert message.startswith(f"{SOURCE}: {key}: must be from {low} to {high}, got ")


@pytest.mark.parametrize(
    ("key", "longest", "too_long"),
    [
        ("kill_grace", "365d", "366d"),
        ("server.send_timeout", 31536000, 31536001),
        ("event_retention_age", "36500d", "36501d"),
    ],
)
def test_durations_are_bounded(key: str, longest: object, too_long: object) -> None:
    table, _, name = key.rpartition(".")

    def text(value: object) -> str:
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        return f"[{table}]\n{name} = {shown}\n" if table else f"{name} = {shown}\n"

    parse_config(text(longest), BASE)
    assert error_of(text(too_long)).startswith(f"{SOURCE}: {key}: duration must be between 0")


def test_every_message_starts_with_the_file_and_names_the_key() -> None:
    assert error_of("[server]\nprot = 1\n") == (
        f"{SOURCE}: [server]: unknown key 'prot' (did you mean 'port'?)"
    )
    assert error_of("kill_grace = true\n", source=None).startswith("config: kill_grace: ")
    assert error_of("[[auth.tokens]]\nrole = 'admin'\ntoken = '12345678'\n") == (
        f"{SOURCE}: auth.tokens[0].role: invalid value 'admin' (expected read or operate)"
    )
    assert error_of("[[auth.tokens]]\nrole = 'read'\n") == (
        f"{SOURCE}: auth.tokens[0] needs exactly one of 'token', 'sha256' or 'env'"
    )
    assert error_of("server = 3\n") == f"{SOURCE}: server: must be a table ([server])"


def test_every_problem_of_a_file_is_reported_at_once_one_line_each() -> None:
    text = (
        "kill_grace = true\n"
        "colour = 1\n"
        "[server]\nport = 70000\nprot = 1\n"
        "[[auth.tokens]]\nrole = 'admin'\nrol = 1\n"
        "[executors.dask]\naddress = 3\n"
        "[history]\nkeep_days = 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, BASE, source=SOURCE)
    assert caught.value.problems == (
        f"{SOURCE}: kill_grace: expected a duration like '90s', '5m', '1h' or seconds, got True",
        f"{SOURCE}: unknown key 'colour'",
        f"{SOURCE}: server.port: must be from 0 to 65535, got 70000",
        f"{SOURCE}: [server]: unknown key 'prot' (did you mean 'port'?)",
        f"{SOURCE}: auth.tokens[0].role: invalid value 'admin' (expected read or operate)",
        f"{SOURCE}: auth.tokens[0]: unknown key 'rol' (did you mean 'role'?)",
        f"{SOURCE}: auth.tokens[0] needs exactly one of 'token', 'sha256' or 'env'",
        f"{SOURCE}: executors.dask.address: invalid value 3 "
        "(expected an address like 'tcp://10.0.0.5:8786')",
        f"{SOURCE}: history.keep_days: must be more than 0 and at most 36500 days, got 0",
    )
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_a_byte_order_mark_is_skipped_and_bad_utf8_is_one_line() -> None:
    assert parse_config("\ufeff[server]\nport = 0\n", BASE).server.port == 0
    assert parse_config(b"\xef\xbb\xbfmax_parallel_steps = 3\n", BASE).max_parallel_steps == 3
    assert error_of(b"kill_grace = '\xff'\n").startswith(f"{SOURCE}: not UTF-8 text: ")


def test_the_dask_executor_and_its_tls_paths_resolve_against_the_config_folder() -> None:
    assert default_config(BASE).dask is None
    assert default_config(BASE).executor_names == ("local",)
    config = parse_config(
        "[executors.dask]\n"
        'address = "tls://10.0.0.5:8786"\n'
        'connect_timeout = "30s"\n'
        'tls_ca_file = "tls/ca.pem"\n'
        'tls_client_cert = "/etc/dagd/client.pem"\n'
        'tls_client_key = "tls/client.key"\n',
        BASE,
    )
    assert config.dask is not None
    assert config.dask.address == "tls://10.0.0.5:8786"
    assert config.dask.connect_timeout == 30.0
    assert config.dask.tls_ca_file == BASE / "tls/ca.pem"
    assert config.dask.tls_client_cert == Path("/etc/dagd/client.pem")
    assert config.dask.tls_client_key == BASE / "tls/client.key"
    assert config.executor_names == ("local", "dask")
    bare = parse_config('[executors.dask]\naddress = "tcp://h:8786"\n', BASE).dask
    assert bare is not None and bare.connect_timeout == 10.0 and bare.tls_ca_file is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[executors.dask]\n", "executors.dask.address: missing (e.g. 'tcp://10.0.0.5:8786')"),
        (
            '[executors.dask]\naddress = "tcp://h :1"\n',
            "executors.dask.address: invalid value 'tcp://h :1' "
            "(expected an address like 'tcp://10.0.0.5:8786')",
        ),
        (
            '[executors.dask]\naddress = "tcp://h:1"\nconect_timeout = 3\n',
            "[executors.dask]: unknown key 'conect_timeout' (did you mean 'connect_timeout'?)",
        ),
        (
            '[executors.dusk]\naddress = "tcp://h:1"\n',
            "executors: unknown executor 'dusk' (did you mean 'dask'?)",
        ),
        ('[executors.ray]\naddress = "x"\n', "executors: unknown executor 'ray' (known: dask)"),
        (
            '[executors.dask]\naddress = "tcp://h:1"\ntls_client_cert = "c.pem"\n',
            "set both executors.dask.tls_client_cert and executors.dask.tls_client_key, or neither",
        ),
    ],
)
def test_executor_tables_refuse_what_cannot_work(text: str, says: str) -> None:
    assert error_of(text) == f"{SOURCE}: {says}"


def test_history_keeps_days_and_runs_per_dag() -> None:
    assert default_config(BASE).history == HistoryConfig(keep_days=None, keep_runs=None)
    history = parse_config("[history]\nkeep_days = 30\nkeep_runs = 500\n", BASE).history
    assert history == HistoryConfig(keep_days=30.0, keep_runs=500)
    assert parse_config("[history]\nkeep_days = 0.5\n", BASE).history.keep_days == 0.5


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("keep_days = 0", "history.keep_days: must be more than 0 and at most 36500 days, got 0"),
        ("keep_days = -1.5", "history.keep_days: must be more than 0 and at most 36500 days"),
        ("keep_days = 36501", "history.keep_days: must be more than 0 and at most 36500 days"),
        ("keep_days = nan", "history.keep_days: must be more than 0 and at most 36500 days"),
        ("keep_days = '30d'", "history.keep_days: invalid value '30d' (expected a number of days)"),
        ("keep_runs = 0", "history.keep_runs: must be from 1 to 1000000000, got 0"),
        ("keep_runs = 2.5", "history.keep_runs: invalid value 2.5 (expected integer)"),
        ("keep_run = 3", "[history]: unknown key 'keep_run' (did you mean 'keep_runs'?)"),
    ],
)
def test_history_refuses_what_it_cannot_keep(text: str, says: str) -> None:
    assert error_of(f"[history]\n{text}\n").startswith(f"{SOURCE}: {says}")
