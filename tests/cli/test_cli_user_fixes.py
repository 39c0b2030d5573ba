"""Problems a fresh user found in the CLI, each checked against a real `dagd serve`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from clienthelp import DaemonProc, clean_env, dagd, serving, start_dagd, wait_for

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


ESCAPES = r"""
[steps.noisy]
command = '''
printf 'title\033]0;pwned\007 clip\033]52;c;aGk=\007 reset\033c '
printf 'clear\033[2J bell\007 cr\r tab\tend\n'
printf 'err\033[31m\n' >&2
'''
"""


def test_logs_text_escapes_control_characters_and_raw_stays_exact(tmp_path: Path) -> None:
    """Text mode shows a step's control sequences escaped (\\x1b...), never as they are,
    piped here (the same code path as on a terminal); tab and newline stay; --raw is exact."""
    with serving(tmp_path, {"noisy": ESCAPES}) as d:
        done = dagd("trigger", "noisy", "--wait", "--quiet", "--config", str(d.config))
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.strip()
        cfg = str(d.config)
        text = dagd("logs", run_id, "noisy", "--config", cfg)
        raw = subprocess.run(
            [sys.executable, "-m", "dagd", "logs", run_id, "noisy", "--raw", "--config", cfg],
            capture_output=True,
            env=clean_env(),
            timeout=30,
        )
    assert text.returncode == 0, text.stderr
    assert "\x1b" not in text.stdout and "\x07" not in text.stdout and "\r" not in text.stdout
    assert "title\\x1b]0;pwned\\x07 clip\\x1b]52;c;aGk=\\x07 reset\\x1bc" in text.stdout
    assert "clear\\x1b[2J bell\\x07 cr\\x0d tab\tend\n" in text.stdout
    assert "err\\x1b[31m\n" in text.stdout
    assert raw.stdout == (
        b"title\033]0;pwned\007 clip\033]52;c;aGk=\007 reset\033c clear\033[2J bell\007"
        b" cr\r tab\tend\nerr\033[31m\n"
    )


FLAKY = """\
[steps.transform]
command = '''
if [ -e flaky.done ]; then echo fine; else touch flaky.done; echo first try >&2; exit 75; fi
'''
retries = 1

[steps.load]
command = "echo broken >&2; exit 3"
"""


def test_run_quiet_prints_only_the_steps_that_finally_failed(tmp_path: Path) -> None:
    """A step whose attempt failed but whose retry succeeded gets no line with --quiet; the
    step that failed for good does, with its error, and the summary follows."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "etl.toml").write_text(FLAKY)
    (tmp_path / "config.toml").write_text('state_dir = "state"\ndags_dir = "dags"\n')
    result = dagd("run", "etl", "--quiet", "--config", "config.toml", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert (tmp_path / "flaky.done").exists()
    assert "transform" not in result.stdout.split("etl manual__")[0], result.stdout
    assert "exit code 75" not in result.stdout
    assert "load" in result.stdout and "exit code 3" in result.stdout


def test_show_lists_a_retried_attempt_as_failed(tmp_path: Path) -> None:
    """The first attempt failed and a retry followed: `dagd show` says `failed` for it (the
    attempt's outcome), never `retrying`; the second attempt succeeded."""
    flaky = FLAKY.replace("flaky.done", str(tmp_path / "flaky.done")).split("[steps.load]")[0]
    with serving(tmp_path / "d", {"etl": flaky}) as d:
        done = dagd("trigger", "etl", "--wait", "--quiet", "--config", str(d.config))
        assert done.returncode == 0, done.stderr
        shown = dagd("show", done.stdout.strip(), "--config", str(d.config))
    assert shown.returncode == 0, shown.stderr
    attempts = [line.split() for line in shown.stdout.splitlines() if "attempt " in line]
    assert [a[:3] for a in attempts] == [["attempt", "1", "failed"], ["attempt", "2", "success"]]
    assert "retrying" not in shown.stdout


DAILY = """\
schedule = "0 5 * * *"
[steps.s]
command = "true"
"""


def test_backfill_dry_run_says_would_and_a_reversed_range_is_a_usage_error(
    tmp_path: Path,
) -> None:
    """A dry run says what it would do, in its summary and on each slot; --end before --start
    is refused by the CLI itself (exit 2), quoting the dates as typed."""
    with serving(tmp_path, {"daily": DAILY}) as d:
        cfg = ["--config", str(d.config)]
        dry = dagd("backfill", "daily", "--start", "2024-01-01", "--end", "2024-01-02",
                   "--dry-run", *cfg)  # fmt: skip
        reversed_ = dagd("backfill", "daily", "--start", "2024-12-01", "--end", "2024-11-29",
                         *cfg)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "dry run of backfill daily: 2 slots, nothing queued (would queue 2)"
    assert [line.split("  ")[1] for line in lines[3:]] == ["would queue", "would queue"]
    assert reversed_.returncode == 2, reversed_.stderr
    assert "--end '2024-11-29' is before --start '2024-12-01'" in reversed_.stderr
    assert "23:59:59" not in reversed_.stderr
