"""The core is pure: importing it never pulls in trio (or any I/O framework)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Every module of dagd.core, found on disk so that a new one is checked too.
CORE = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "dagd" / "core").rglob("*.py")
)


def imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(proc.stdout))


def test_spec_runstate_protocol_do_not_import_trio():
    loaded = imported_after(["dagd.core.spec", "dagd.core.runstate", "dagd.core.protocol.events"])
    assert "dagd.core.runstate" in loaded  # the check itself worked
    assert "trio" not in loaded


def test_no_core_module_imports_an_event_loop():
    assert "dagd.core.protocol.codec" in CORE and "dagd.core.records" in CORE
    loaded = imported_after(CORE)
    assert set(CORE) <= loaded
    assert not {"trio", "trio_websocket", "asyncio", "anyio"} & loaded
    # nor the modules of I/O: the core decides, the layers around it act
    assert not {"sqlite3", "socket", "subprocess", "selectors", "ssl", "psutil"} & loaded


def test_the_check_would_see_trio():
    assert "trio" in imported_after(["dagd.runtime.engine"])
