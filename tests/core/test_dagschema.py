"""The DAG file's JSON Schema: a valid 2020-12 schema, generated from the loader's own
declarations, that accepts every bundled DAG and every example in the docs and refuses what the
loader refuses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dagd.core.dagschema import DIALECT, dag_json_schema
from dagd.core.spec import DAG_KEYS, STEP_KEYS, DagSpecError, parse_dag

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted((ROOT / "dags").glob("*.toml"))
# Every TOML block of docs/dags.md is a DAG file, but the taplo configuration shown there.
DOC_BLOCKS = [
    block
    for block in re.findall(r"```toml\n(.*?)```", (ROOT / "docs/dags.md").read_text(), re.S)
    if not block.startswith("# .taplo.toml")
]

VALIDATOR = jsonschema.Draft202012Validator(dag_json_schema())


def schema_errors(text: str) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(tomllib.loads(text))]


def test_it_is_a_valid_draft_2020_12_schema_and_a_fresh_copy_each_time() -> None:
    schema = dag_json_schema()
    assert schema["$schema"] == DIALECT
    jsonschema.Draft202012Validator.check_schema(schema)
    schema["properties"].clear()
    assert dag_json_schema()["properties"]


def test_the_docs_have_examples_to_check() -> None:
    assert len(BUNDLED) >= 2 and len(DOC_BLOCKS) >= 4


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_dag_validates(path: Path) -> None:
    text = path.read_text()
    assert schema_errors(text) == []
    parse_dag(text, str(path), default_id=path.stem)


@pytest.mark.parametrize("block", DOC_BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_every_toml_example_in_the_docs_validates_and_loads(block: str) -> None:
    assert schema_errors(block) == []
    parse_dag(block, "docs/dags.md", default_id="example")


STEP = '[steps.a]\ncommand = "x"\n'

# Each is refused by the loader (a DagSpecError) and by the schema.
BAD = {
    "unknown-dag-key": 'shedule = "@daily"\n' + STEP,
    "unknown-step-key": STEP + "retires = 3\n",
    "no-steps": 'description = "x"\n',
    "empty-steps": "[steps]\n",
    "bad-dag-id": 'id = "my dag!"\n' + STEP,
    "bad-step-id": '[steps."my step"]\ncommand = "x"\n',
    "neither-command-nor-call": '[steps.a]\ndescription = "nothing to run"\n',
    "both-command-and-call": STEP + 'call = "m:f"\n',
    "call-without-colon": '[steps.a]\ncall = "module.function"\n',
    "call-not-string": "[steps.a]\ncall = 3\n",
    "empty-argv": "[steps.a]\ncommand = []\n",
    "argv-not-strings": '[steps.a]\ncommand = ["ls", 3]\n',
    "blank-command": '[steps.a]\ncommand = "   "\n',
    "blank-precondition": STEP + 'precondition = " "\n',
    "empty-argv-precondition": STEP + "precondition = []\n",
    "wait-for-not-a-table": STEP + 'wait_for = "test -f x"\n',
    "wait-for-without-command": STEP + 'wait_for = { interval = "5s" }\n',
    "wait-for-unknown-key": STEP + 'wait_for = { command = "x", intervall = "5s" }\n',
    "wait-for-zero-interval": STEP + 'wait_for = { command = "x", interval = 0 }\n',
    "wait-for-bad-timeout": STEP + 'wait_for = { command = "x", timeout = "soon" }\n',
    "command-nul": '[steps.a]\ncommand = "a\\u0000b"\n',
    "dependency-not-string": STEP + "depends_on = [1]\n",
    "bad-trigger-rule": STEP + 'trigger_rule = "all_sucess"\n',
    "negative-retries": STEP + "retries = -1\n",
    "too-many-retries": STEP + "retries = 1001\n",
    "fractional-retries": STEP + "retries = 1.5\n",
    "bool-retries": STEP + "retries = true\n",
    "backoff-below-1": STEP + "retry_backoff = 0.5\n",
    "backoff-text": STEP + 'retry_backoff = "2"\n',
    "duration-words": STEP + 'retry_delay = "5 minutes"\n',
    "duration-missing-unit": STEP + 'timeout = "1h30"\n',
    "negative-duration": STEP + "retry_delay = -3\n",
    "duration-too-long": STEP + "max_retry_delay = 31536001\n",
    "timeout-zero": STEP + "timeout = 0\n",
    "cwd-nul": STEP + 'cwd = "/a\\u0000b"\n',
    "max-active-runs-zero": "max_active_runs = 0\n" + STEP,
    "max-active-steps-too-big": "max_active_steps = 10001\n" + STEP,
    "catchup-not-bool": 'catchup = "yes"\n' + STEP,
    "tags-not-strings": 'tags = ["a", 1]\n' + STEP,
    "bad-param-name": '[params]\n"bad-name" = "x"\n' + STEP,
    "bad-param-value": "[params]\nday = [1, 2]\n" + STEP,
    "param-beyond-64-bits": "[params]\nn = 9223372036854775808\n" + STEP,
    "bad-env-name": '[env]\n"1X" = "y"\n' + STEP,
    "bad-step-env-name": STEP + 'env = { "A-B" = "1" }\n',
    "bad-dag-executor": 'executor = "my cluster"\n' + STEP,
    "step-executor-not-string": STEP + "executor = 1\n",
    "steps-not-a-table": 'steps = "a"\n',
    "step-not-a-table": "[steps]\na = 3\n",
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_what_the_loader_refuses_the_schema_refuses(text: str) -> None:
    with pytest.raises(DagSpecError):
        parse_dag(text, "bad.toml", default_id="bad")
    assert schema_errors(text) != []


def step_schema(schema: dict[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = schema["properties"]["steps"]["additionalProperties"]
    return step


def test_every_key_the_loader_accepts_is_in_the_schema_and_no_other() -> None:
    schema = dag_json_schema()
    assert list(schema["properties"]) == DAG_KEYS
    assert list(step_schema(schema)["properties"]) == STEP_KEYS
    assert schema["additionalProperties"] is False
    assert step_schema(schema)["additionalProperties"] is False
    for key in DAG_KEYS:
        assert schema["properties"][key]["description"]
    for key in STEP_KEYS:
        assert step_schema(schema)["properties"][key]["description"]


@pytest.mark.parametrize("key", DAG_KEYS)
def test_the_loader_knows_every_dag_key_of_the_schema(key: str) -> None:
    # A value of the wrong type for every key but none: the loader may refuse the value,
    # never the key.
    try:
        parse_dag(f"{key} = {{ x = {{}} }}\n" if key != "steps" else STEP, default_id="d")
    except DagSpecError as exc:
        assert [p for p in exc.problems if p.field == key and "unknown key" in p.message] == []


@pytest.mark.parametrize("key", STEP_KEYS)
def test_the_loader_knows_every_step_key_of_the_schema(key: str) -> None:
    try:
        parse_dag(STEP + f"{key} = {{ x = {{}} }}\n" if key != "command" else STEP, default_id="d")
    except DagSpecError as exc:
        assert [p for p in exc.problems if p.field == key and "unknown key" in p.message] == []


def test_defaults_in_the_schema_are_the_loaders() -> None:
    dag = parse_dag(STEP, default_id="d")
    properties = dag_json_schema()["properties"]
    step = step_schema(dag_json_schema())["properties"]
    assert properties["timezone"]["default"] == dag.timezone
    assert properties["max_active_runs"]["default"] == dag.max_active_runs
    assert properties["catchup"]["default"] == dag.catchup
    assert properties["executor"]["default"] == dag.steps["a"].executor
    assert step["retries"]["default"] == dag.steps["a"].retries
    assert step["retry_backoff"]["default"] == dag.steps["a"].retry_backoff
    assert step["trigger_rule"]["default"] == dag.steps["a"].trigger_rule
