"""The public surface step authors and embedders rely on: `dagd.__all__`, and where each name
comes from. Changing this list is an API change."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dagd

PUBLIC = {
    # DAG model and validation
    "DagSpec",
    "DagSpecError",
    "StepSpec",
    "TriggerRule",
    "parse_dag",
    # configuration
    "Config",
    "parse_config",
    # statuses and events
    "RunStatus",
    "StepStatus",
    "DagEvent",
    "DagRunStatusEvent",
    "DagRunProgressEvent",
    "StepStatusEvent",
    "ErrorEvent",
    # step authors: what a Python-callable step receives
    "StepContext",
    # embedding: a daemon in your trio program, or one run without a daemon
    "open_daemon",
    "Daemon",
    "DaemonError",
    "EventStream",
    "RunState",
    "StateDirError",
    "StateDirInUse",
    "run_dag",
    # the reconnecting WebSocket client library
    "client",
}


def test_all_is_the_public_list():
    assert set(dagd.__all__) == PUBLIC
    assert len(dagd.__all__) == len(PUBLIC)  # no name twice


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_resolves_and_is_documented(name):
    value = getattr(dagd, name)
    assert value is not None
    if callable(value) or isinstance(value, type):
        assert (value.__doc__ or "").strip(), f"dagd.{name} has no docstring"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dagd.nope  # noqa: B018


def test_importing_dagd_does_not_load_trio():
    code = "import sys, dagd; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_step_context_is_the_one_steps_receive():
    from dagd.runtime import executor

    assert dagd.StepContext is executor.StepContext
