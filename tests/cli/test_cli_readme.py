"""The README's WebSocket examples, run as written (only the port changed) against a real
daemon, from its folder as the README says: with only dagd's own dependencies (no
`websockets`) they trigger `etl` and print its events."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clienthelp import DaemonProc, clean_env, serving, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
DAGS = {
    "etl": """
        [params]
        date = "2024-01-01"
        [steps.extract]
        command = "true"
        [steps.load]
        command = "true"
        depends_on = ["extract"]
    """
}


def protocol_examples() -> list[str]:
    """The python blocks of the README's "The WebSocket protocol" section."""
    text = README.read_text()
    section = text.split("## The WebSocket protocol", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    with serving(tmp_path_factory.mktemp("readme"), DAGS) as d:
        yield d


def example(daemon: DaemonProc, code: str) -> list[str]:
    assert "ws://127.0.0.1:3000/api/v1/ws" in code
    return [sys.executable, "-c", code.replace(":3000/", f":{daemon.port}/")]


def test_the_readme_has_both_examples_and_needs_no_websockets() -> None:
    client, raw = protocol_examples()
    assert "from dagd.client import" in client and "connect(" in client
    assert "trio_websocket" in raw
    assert "import websockets" not in README.read_text()


def test_the_client_example_triggers_etl_and_ends_with_it(daemon: DaemonProc) -> None:
    client, _ = protocol_examples()
    done = subprocess.run(
        example(daemon, client),
        cwd=daemon.root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("connected, events from seq"), done.stdout
    assert "step_id='load'" in done.stdout
    assert "status=<RunStatus.SUCCESS" in done.stdout.splitlines()[-1], done.stdout


def test_the_trio_websocket_example_prints_the_wire_messages(daemon: DaemonProc) -> None:
    _, raw = protocol_examples()
    lines: list[str] = []
    with subprocess.Popen(
        example(daemon, raw),
        cwd=daemon.root,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        out = proc.stdout
        reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")))
        reader.start()
        try:
            wait_for(
                lambda: any("dag_run_status" in x and '"status":"success"' in x for x in lines),
                timeout=20,
                what="the run's success on the wire",
            )
        finally:
            proc.kill()
            reader.join(10)
    assert '"type":"auth_success"' in lines[0], lines
    assert any('"type":"triggered"' in line for line in lines), lines
