"""Problems a fresh user found in the CLI, each checked against a real `dagd serve`."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from clienthelp import DaemonProc, start_dagd, wait_for

LONG = """\
[steps.work]
command = "sleep 8"
"""


def test_trigger_wait_ends_with_the_outcome_when_the_daemon_shuts_down(tmp_path: Path) -> None:
    """SIGTERM cancels the waited-for run; --wait exits 130 with the outcome and no
    traceback, and the restarted daemon does not change that. The 1001 close races the
    client's teardown, so four daemons (the default kill grace made it show most times)."""
    for attempt in range(4):
        _trigger_wait_across_shutdown(tmp_path / str(attempt))


def _trigger_wait_across_shutdown(root: Path) -> None:
    with DaemonProc(root, {"long": LONG}) as d:
        d.config.write_text(
            d.config.read_text()
            .replace('kill_grace = "0.3s"\n', "")
            .replace("progress_interval = 0\n", "")
        )
        d.start()
        d.wait_ready()
        proc = start_dagd("trigger", "long", "--wait", "--plain", "--config", str(d.config))
        wait_for(
            lambda: d.query("SELECT 1 FROM steps WHERE status = 'running'"),
            15,
            "the step to run",
        )
        time.sleep(0.5)  # a step that has run a while: the close then races the teardown
        d.stop(signal.SIGTERM)
        d.start()
        d.wait_ready()
        out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "ConnectionClosed" not in err, err
    assert "cancelled" in out + err
    assert proc.returncode == 130, (out, err)
