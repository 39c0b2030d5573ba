"""`dagd dags` and `dagd watch --plain` show what the daemon knows of a DAG beyond its file:
paused, and running its last good version while its file on disk is broken (cleared when the
file loads again). A real daemon, its DAG file edited on disk."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from clienthelp import DaemonProc, dagd, serving, start_dagd, wait_for

from dagd.client import connect

GOOD = """
description = "extract, transform, load"
[steps.a]
command = "true"
"""
BROKEN = """
description = "extract, transform, load"
[steps.a]
depends_on = ["ghost"]
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProc]:
    with serving(tmp_path, {"etl": GOOD, "report": GOOD}, top='reload_interval = "0.1s"') as d:
        yield d


def dags_text(daemon: DaemonProc) -> str:
    result = dagd("dags", cwd=daemon.root)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    later = time.time() + 2  # a new mtime even within one filesystem tick
    os.utime(path, (later, later))


def test_dags_shows_a_broken_file_and_a_paused_dag(daemon: DaemonProc) -> None:
    async def pause() -> None:
        async with connect(daemon.url, daemon.token) as client:
            await client.pause("report")

    trio.run(pause)
    etl_file = daemon.root / "dags" / "etl.toml"
    rewrite(etl_file, BROKEN)

    def broken_shown() -> str:
        text = dags_text(daemon)
        return text if "last good version" in text else ""

    text = wait_for(broken_shown, what="dagd dags to show the broken file")
    lines = text.splitlines()
    etl = lines.index(next(line for line in lines if line.startswith("etl ")))
    assert "extract, transform, load" in lines[etl]  # the last good version's
    assert lines[etl + 1].startswith("    running the last good version; ")
    assert "etl.toml" in lines[etl + 1] and "ghost" in text
    report = next(line for line in lines if line.startswith("report "))
    assert report.split()[:3] == ["report", "manual", "paused"]

    result = dagd("dags", "--json", cwd=daemon.root)
    by_id = {d["dagId"]: d for d in json.loads(result.stdout)["dags"]}
    assert "ghost" in by_id["etl"]["fileError"] and by_id["etl"]["paused"] is False
    assert by_id["report"]["paused"] is True and by_id["report"]["fileError"] is None

    rewrite(etl_file, GOOD)
    wait_for(lambda: "last good version" not in dags_text(daemon), what="the error to clear")


def test_dags_names_files_that_never_loaded_on_stderr_and_in_json(daemon: DaemonProc) -> None:
    (daemon.root / "dags" / "new.toml").write_text(BROKEN)

    def shown() -> str:
        result = dagd("dags", cwd=daemon.root)
        return result.stderr if "not loaded" in result.stderr else ""

    stderr = wait_for(shown, what="dagd dags to name the broken file")
    lines = stderr.splitlines()
    assert all(line.startswith("not loaded: ") and "new.toml: step 'a': " in line for line in lines)
    assert any("field 'depends_on': " in line and "ghost" in line for line in lines)
    assert "new" not in dagd("dags", cwd=daemon.root).stdout.split()  # no DAG of that name
    document = json.loads(dagd("dags", "--json", cwd=daemon.root).stdout)
    [entry] = document["brokenFiles"]
    assert entry["file"].endswith("new.toml") and entry["dagId"] is None
    assert ("a", "depends_on") in [(p["step"], p["field"]) for p in entry["problems"]]
    assert len(entry["problems"]) == len(lines)


def test_watch_plain_says_when_a_file_breaks_and_loads_again(daemon: DaemonProc) -> None:
    etl_file = daemon.root / "dags" / "etl.toml"
    lines: list[str] = []
    with start_dagd("watch", "--plain", cwd=daemon.root, COLUMNS="200") as watch:
        assert watch.stdout is not None
        out = watch.stdout
        reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")))
        reader.start()
        try:

            def said(text: str) -> str:
                return next((line for line in lines if text in line), "")

            def subscribed() -> bool:
                # A run's line shows the watch is subscribed before the file breaks; a run
                # that ends before the watch has connected is not shown, so trigger again.
                if said("run report"):
                    return True
                assert dagd("trigger", "report", cwd=daemon.root).returncode == 0
                return False

            wait_for(subscribed, timeout=30, what="the watch to show a run")
            rewrite(etl_file, BROKEN)
            broken = wait_for(
                lambda: said("running the last good version"), what="the broken file's line"
            )
            assert "dag etl: active, running the last good version; " in broken
            assert "etl.toml" in broken
            rewrite(etl_file, GOOD)
            wait_for(lambda: said("dag etl: active\n"), what="the line of the fixed file")
        finally:
            watch.terminate()
            watch.wait(10)
            reader.join(10)
