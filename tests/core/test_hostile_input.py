"""Untrusted input raises only its own error: DAG files (DagSpecError), config files
(ConfigError) and trigger params (ValueError), whatever they hold.

The examples from the field (nesting thousands deep, a 400-digit timeout) and their siblings are
plain tests; hypothesis then feeds random TOML documents and random bytes to both loaders and
random params to `bind_params`. In CI the `dagd-ci` profile (tests/conftest.py) derandomizes
them; `max_examples` keeps each to a second or two.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagd.core.config import ConfigError, parse_config
from dagd.core.model import DagSpec
from dagd.core.spec import DAG_KEYS, STEP_KEYS, DagSpecError, parse_dag

FILE = "dags/hostile.toml"
STEP = '[steps.a]\ncommand = "true"\n'


def dag_problems(text: str | bytes) -> list[str]:
    with pytest.raises(DagSpecError) as caught:
        parse_dag(text, FILE, default_id="hostile")
    return [str(p) for p in caught.value.problems]


# ------------------------------------------------------------------- the examples, DAG files


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x = " + "[" * 3000 + "]" * 3000, id="arrays-3000-deep"),
        pytest.param("x = " + "{a = " * 3000 + "1" + "}" * 3000, id="inline-tables-3000-deep"),
        pytest.param(STEP + "env = " + "{a = " * 2000 + "1" + "}" * 2000, id="deep-in-a-step"),
        pytest.param("tags = [" + "[" * 5000 + "]" * 5000 + "]\n" + STEP, id="deep-tags"),
    ],
)
def test_deep_nesting_is_the_files_problem(text: str) -> None:
    [line] = dag_problems(text)
    assert line.startswith(f"{FILE}: ") and "nested too deeply" in line


BIG = "9" * 400


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (f"timeout = {BIG}", "timeout", "between 0 and 31536000 seconds"),
        (f'timeout = "{BIG}s"', "timeout", "between 0 and 31536000 seconds"),
        (f'retry_delay = "{"9" * 5000}"', "retry_delay", "between 0 and 31536000 seconds"),
        ("max_retry_delay = 1e308", "max_retry_delay", "between 0 and 31536000 seconds"),
        ('timeout = "366d"', "timeout", "between 0 and 31536000 seconds"),
        ("timeout = nan", "timeout", "between 0 and 31536000 seconds"),
        (f"retry_backoff = {BIG}", "retry_backoff", "from 1 to 100"),
        ("retry_backoff = inf", "retry_backoff", "from 1 to 100"),
        (f"retries = {BIG}", "retries", "from 0 to 1000"),
        ("retries = 1001", "retries", "from 0 to 1000"),
        ('command = "echo \\u0000"', "command", "NUL"),
        ('cwd = "/tmp\\u0000"', "cwd", "NUL"),
        (f"env = {{ X = {BIG} }}", "env", "64-bit"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_numbers_are_bounded_and_text_is_checked(body: str, field: str, says: str) -> None:
    text = "[steps.a]\n" + ("" if body.startswith("command") else 'command = "x"\n') + body
    [line] = dag_problems(text)
    assert line.startswith(f"{FILE}: step 'a': field '{field}': ")
    assert says in line


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (f"max_active_runs = {BIG}", "max_active_runs"),
        ("max_active_runs = 10001", "max_active_runs"),
        (f"max_active_steps = {BIG}", "max_active_steps"),
        (f"params = {{ n = {BIG} }}", "params"),
        ('params = { n = "a\\u0000b" }', "params"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_dag_level_numbers_are_bounded(body: str, field: str) -> None:
    [line] = dag_problems(body + "\n" + STEP)
    assert line.startswith(f"{FILE}: field '{field}': ")


def test_a_long_wrong_value_is_quoted_short() -> None:
    [line] = dag_problems(f'[steps.a]\ncommand = "x"\ntimeout = "{"x" * 100_000}"')
    assert len(line) < 250


def test_control_characters_in_names_never_reach_a_problem_line() -> None:
    lines = dag_problems('"\\u001b[31mred\\n" = 1\n' + STEP)
    assert lines and all("\x1b" not in line and "\n" not in line for line in lines)
    [line] = dag_problems("this is not toml")
    with pytest.raises(DagSpecError) as caught:
        parse_dag("this is not toml", "dags/\x1b[2Jevil\x00.toml")
    assert str(caught.value) == "dags/\\x1b[2Jevil\\x00.toml: " + line.split(": ", 1)[1]


# ----------------------------------------------------------------------- text and names


def test_a_file_with_a_byte_order_mark_loads() -> None:
    text = 'id = "bom"\n' + STEP
    for given_ in ("\ufeff" + text, ("\ufeff" + text).encode()):
        assert parse_dag(given_, FILE).id == "bom"
    assert parse_config("\ufeffkill_grace = 2\n".encode(), Path("/srv")).kill_grace == 2.0


def test_bytes_that_are_not_utf8_are_the_files_problem() -> None:
    [line] = dag_problems(b'id = "x"\n\xff\xfe[steps.a]')
    assert line.startswith(f"{FILE}: not UTF-8 text")
    with pytest.raises(ConfigError, match=r"^cfg.toml: not UTF-8 text"):
        parse_config(b"\xc3(", Path("/srv"), source=Path("cfg.toml"))


@pytest.mark.parametrize(
    ("params", "pair"),
    [
        ('{ date = "a", DATE = "b" }', "'date' and 'DATE'"),
        ("{ Limit = 1, lImIt = 2, x = 3 }", "'Limit' and 'lImIt'"),
    ],
)
def test_params_that_share_one_variable_are_refused_naming_both(params: str, pair: str) -> None:
    [line] = dag_problems(f"params = {params}\n" + STEP)
    assert line.startswith(f"{FILE}: field 'params': params {pair} would both be DAGD_PARAM_")


@pytest.mark.parametrize(
    "value",
    ["${PATH", "${", "a${1X}", "${PATH:-/bin}", "$$${X"],
)
def test_a_malformed_reference_in_env_is_refused(value: str) -> None:
    for text in (f'env = {{ V = "{value}" }}\n' + STEP, STEP + f'env = {{ V = "{value}" }}\n'):
        [line] = dag_problems(text)
        assert "value of 'V': '${' at character" in line


@pytest.mark.parametrize(
    "value", ["$PATH", "${PATH}", "$$", "$${", "$$$${X", "cost: 5$", "$1", "a$ b"]
)
def test_wellformed_env_values_are_accepted(value: str) -> None:
    dag = parse_dag(f"env = {{ V = {json.dumps(value)} }}\n" + STEP, FILE, "x")
    assert dag.steps["a"].env == {"V": value}  # kept as written: it expands when a step starts


# --------------------------------------------------------------------------------- params

DAG = parse_dag('params = { day = "today", n = 1 }\n' + STEP, FILE, "p")


@pytest.mark.parametrize(
    ("given_", "says"),
    [
        ({"day": 10**5000}, "64 bits"),
        ({"day": 2**63}, "64 bits"),
        ({"day": "a\x00b"}, "NUL"),
        ({"day": "\ud800"}, "not valid Unicode"),
        ({"day": "\udcff"}, "not valid Unicode"),
        ({"day": ["a"]}, "expected a string, number or boolean, got list"),
        ({"day": {"a": 1}}, "got dict"),
        ({"day": None}, "got NoneType"),
        ({"day": b"x"}, "got bytes"),
        ({"day": "x" * 65537}, "over 65536 bytes"),
        ({"day": "\u00e9" * 40000}, "over 65536 bytes"),
        ({1: "x", "zz": 2, None: 3}, "has no param"),
        (["day"], "must be a table"),
        ("day=1", "must be a table"),
    ],
)
def test_bind_params_refuses_what_a_step_could_not_get(given_: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        DAG.bind_params(given_)  # type: ignore[arg-type]


def test_bind_params_keeps_what_steps_can_get() -> None:
    assert DAG.bind_params({"day": -(2**63), "n": 1.5}) == {"day": str(-(2**63)), "n": "1.5"}
    assert DAG.bind_params({"day": True, "n": "\u00e9\t\n"}) == {"day": "true", "n": "\u00e9\t\n"}
    assert DAG.bind_params(None) == {"day": "today", "n": "1"}


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**600), max_value=10**600)
    | st.floats()
    | st.text()
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["day", "n", "x", "DAY"]) | st.text() | st.integers(),
        values | st.text(st.characters(codec=None, categories=["Cs", "Cc"])),
        max_size=4,
    )
)
def test_bind_params_raises_only_its_own_error(given_: dict[str, object]) -> None:
    try:
        bound = DAG.bind_params(given_)
    except ValueError:
        return
    assert set(bound) == {"day", "n"}
    for text in bound.values():
        text.encode("utf-8")  # storable and passable as an environment variable
        assert "\x00" not in text


# ------------------------------------------------- random documents and bytes, both loaders


class Raw(str):
    """TOML text written into a document as it is (nesting deeper than Python can recurse)."""


def toml_key(key: str) -> str:
    return json.dumps(key)  # a TOML basic string is JSON's string syntax for these keys


def toml_value(value: object) -> str:
    """A TOML inline value for what `toml_values` makes."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


DURATION_TEXT = st.from_regex(r"\A[0-9]{1,30}(\.[0-9]{1,5})?(ms|s|m|h|d)?\Z") | st.sampled_from(
    ["90s", "1h30m", "250ms", "", " ", "-1s", "1e999", "nan", "inf", "5x"]
)
SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats()
    | st.text(max_size=20)
    | DURATION_TEXT
    | st.sampled_from(["true", "@daily", "*/5 * * * *", "UTC", "Mars/Base", "all_done", "a:b"])
    | st.text(st.characters(codec="utf-8", min_codepoint=0, max_codepoint=0x9F), max_size=5)
)
HUGE = st.integers(min_value=2**63, max_value=10**500) | st.integers(-(10**500), -(2**63))
NESTED = st.tuples(st.integers(1, 3000), st.sampled_from(["[", "{a="])).map(
    lambda t: Raw(t[1] * t[0] + "1" + ("]" if t[1] == "[" else "}") * t[0])
)
HOSTILE = HUGE | NESTED | st.floats(allow_nan=True, allow_infinity=True)
toml_values = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(STEP_KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
# Mostly real keys with plausible, wrong or hostile values, so that examples get past the
# first check into the deeper ones.
step_tables = st.dictionaries(
    st.sampled_from(STEP_KEYS) | st.text(max_size=6), toml_values | HOSTILE, min_size=1
).map(lambda table: {"command": "true", **table})
dag_docs = st.fixed_dictionaries(
    {},
    optional={
        **{key: toml_values | HOSTILE for key in DAG_KEYS},
        "steps": st.dictionaries(
            st.sampled_from(["a", "b"]) | st.text(max_size=6), step_tables | toml_values, max_size=3
        ),
    },
)


def toml_document(doc: dict[str, object]) -> str:
    return "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items())


def assert_dag_or_its_error(data: str | bytes) -> None:
    try:
        dag = parse_dag(data, FILE, default_id="random")
    except DagSpecError as exc:
        assert exc.problems and all(str(p).startswith(FILE) for p in exc.problems)
        assert all("\n" not in str(p) and "\x00" not in str(p) for p in exc.problems)
    else:
        assert isinstance(dag, DagSpec) and dag.steps


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(dag_docs)
def test_random_dag_documents_give_a_dag_or_its_error(doc: dict[str, object]) -> None:
    assert_dag_or_its_error(toml_document(doc))


@settings(max_examples=200)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_bytes_give_a_dag_or_its_error(data: bytes) -> None:
    assert_dag_or_its_error(data)
    assert_dag_or_its_error(b'id = "x"\n[steps.a]\ncommand = "true"\n' + data)


@settings(max_examples=50)
@given(st.integers(min_value=1, max_value=4000), st.sampled_from(["[", "{a=", "[{a=[", "{a={b="]))
def test_any_depth_of_nesting_gives_a_dag_or_its_error(depth: int, opener: str) -> None:
    closer = "".join({"[": "]", "{": "}"}[c] for c in reversed(opener) if c in "[{")
    assert_dag_or_its_error(STEP + "env = " + opener * depth + "1" + closer * depth)


CONFIG_KEYS = [
    "dags_dir",
    "state_dir",
    "max_parallel_steps",
    "progress_interval",
    "kill_grace",
    "reload_interval",
    "event_retention_count",
    "event_retention_age",
]
SERVER_KEYS = [
    "enabled",
    "host",
    "port",
    "origins",
    "tls_cert",
    "tls_key",
    "max_connections",
    "max_message_size",
    "send_buffer",
    "send_timeout",
    "heartbeat_interval",
    "auth_timeout",
    "handshake_timeout",
    "rate_limit",
    "ping_interval",
]
TOKEN_KEYS = ["role", "name", "token", "sha256", "env"]
config_docs = st.fixed_dictionaries(
    {},
    optional={
        **{
            key: toml_values | HOSTILE | st.sampled_from(["~", "~nobody-here/x", "/a\x00b"])
            for key in CONFIG_KEYS
        },
        "server": st.dictionaries(
            st.sampled_from(SERVER_KEYS) | st.text(max_size=5), toml_values | HOSTILE
        )
        | toml_values,
        "auth": st.fixed_dictionaries(
            {},
            optional={
                "tokens": st.lists(
                    st.dictionaries(
                        st.sampled_from(TOKEN_KEYS),
                        st.sampled_from(["read", "operate", "secret-token", "x"]) | toml_values,
                    ),
                    max_size=3,
                )
                | toml_values
            },
        )
        | toml_values,
    },
)


def assert_config_or_its_error(data: str | bytes) -> None:
    try:
        parse_config(data, Path("/srv/dagd"), source=Path("cfg.toml"))
    except ConfigError as exc:
        lines = str(exc).split("\n")
        assert lines == list(exc.problems)
        assert all(line.startswith("cfg.toml: ") and "\x00" not in line for line in lines)


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(config_docs)
def test_random_config_documents_give_a_config_or_its_error(doc: dict[str, object]) -> None:
    assert_config_or_its_error(toml_document(doc))


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_give_a_config_or_its_error(data: bytes) -> None:
    assert_config_or_its_error(data)
    assert_config_or_its_error(b"[server]\nport = 0\n" + data)


# ----------------------------------------------------------- the examples, config files


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x = " + "[" * 3000 + "]" * 3000, "cfg.toml: nested too deeply"),
        (f"kill_grace = {BIG}", "cfg.toml: kill_grace: duration must be between 0 and"),
        (f"[server]\nport = {BIG}", "cfg.toml: server.port: must be from 0 to 65535"),
        (f"max_parallel_steps = {BIG}", "cfg.toml: max_parallel_steps: must be from 1 to 10000"),
        (f"event_retention_count = {BIG}", "cfg.toml: event_retention_count: must be from 1 to"),
        ("event_retention_age = 1e300", "cfg.toml: event_retention_age: duration must be"),
        ("[server]\nsend_timeout = nan", "cfg.toml: server.send_timeout: duration must be"),
        ("[auth]\ntokens = 5", "cfg.toml: auth.tokens: must be a list of tables"),
        ('[auth]\ntokens = "abc"', "cfg.toml: auth.tokens: must be a list of tables"),
        ('dags_dir = "a\\u0000b"', "cfg.toml: dags_dir: invalid value"),
        ('state_dir = "~no-such-user-here/state"', "cfg.toml: state_dir: cannot expand"),
        ('"\\u001b[2J" = 1', "cfg.toml: unknown key '\\x1b[2J'"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_config_examples_are_one_line_naming_file_and_key(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("/srv"), source=Path("cfg.toml"))
    message = str(caught.value)
    assert message.startswith(says)
    assert "\n" not in message and "\x1b" not in message
