"""Problems a fresh user found in the CLI, each checked against a real `dagd serve`."""

from __future__ import annotations

import http.server
import signal
import subprocess
import sys
import threading
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
    client's teardown, so two daemons (with the default kill grace the race showed each
    time before dagd.client let the cancellation win)."""
    for attempt in range(2):
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


def _client_config(root: Path, port: int, tokens: str) -> Path:
    """A client-side config: the daemon's port, an empty state folder of its own (no token
    file), and `tokens` as its [[auth.tokens]] entries."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "client.toml"
    path.write_text(f'state_dir = "cstate"\n[server]\nport = {port}\n{tokens}\n')
    return path


def test_a_refused_token_names_where_it_came_from(tmp_path: Path) -> None:
    with serving(tmp_path / "d", {}) as d:
        by_option = dagd("dags", "--config", str(d.config), "--token", "wrong-token")
        by_env = dagd("dags", "--config", str(d.config), DAGD_TOKEN="wrong-token")
        inline = _client_config(
            tmp_path / "c1", d.port, '[[auth.tokens]]\nname = "ops"\ntoken = "wrong-token"\n'
        )
        by_config = dagd("dags", "--config", str(inline))
        named = _client_config(
            tmp_path / "c2", d.port, '[[auth.tokens]]\nenv = "DAGD_TEST_SECRET_X"\n'
        )
        by_named_env = dagd("dags", "--config", str(named), DAGD_TEST_SECRET_X="wrong-token")
        by_file = dagd("dags", "--config", str(d.config))
    for result in (by_option, by_env, by_config, by_named_env):
        assert result.returncode == 1, result.stderr
        assert "refused the token" in result.stderr
        assert "wrong --token, DAGD_TOKEN or token file?" not in result.stderr
    assert "--token" in by_option.stderr and "DAGD_TOKEN" not in by_option.stderr
    assert "DAGD_TOKEN" in by_env.stderr
    assert "[[auth.tokens]]" in by_config.stderr and "'ops'" in by_config.stderr
    assert str(inline) in by_config.stderr
    assert "$DAGD_TEST_SECRET_X" in by_named_env.stderr
    assert by_file.returncode == 0, by_file.stderr


def test_an_unset_token_variable_is_named(tmp_path: Path) -> None:
    config = _client_config(tmp_path, 9, '[[auth.tokens]]\nenv = "DAGD_TEST_UNSET_X"\n')
    result = dagd("dags", "--config", str(config))
    assert result.returncode == 1
    assert "DAGD_TEST_UNSET_X" in result.stderr and "not set" in result.stderr
    assert "no token file" not in result.stderr and "been started" not in result.stderr


def test_wss_against_a_plain_daemon_says_the_tls_handshake_failed(tmp_path: Path) -> None:
    with serving(tmp_path, {}) as d:
        url = d.url.replace("ws://", "wss://")
        result = dagd("dags", "--url", url, "--token", d.token)
    assert result.returncode == 1
    assert "TLS handshake failed" in result.stderr, result.stderr
    assert "serving TLS" in result.stderr
    assert "Is it running?" not in result.stderr and "failed: )" not in result.stderr


class _NotDagd(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>\n<head><title>404 Not Found</title></head>\n<body>\n" + b"x" * 300
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_http_404_page_is_cut_to_one_line() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotDagd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = dagd("dags", "--url", f"ws://127.0.0.1:{port}/api/v1/ws", "--token", "t" * 12)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "404" in lines[0] and "<html>\\n<head>" in lines[0]
    assert "x" * 120 not in lines[0]


def test_a_port_out_of_range_is_a_usage_error() -> None:
    result = dagd("dags", "--url", "ws://127.0.0.1:99999/api/v1/ws", "--token", "t" * 12)
    assert result.returncode == 2, result.stderr
    assert "port out of range" in result.stderr


def test_list_without_a_dag_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('state_dir = "state"\ndags_dir = "dags"\n')
    result = dagd("list", "--config", "config.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert f"the DAG folder {tmp_path / 'dags'} does not exist" in result.stderr
    assert "broken" not in result.stderr and result.stdout == ""


ONE = '[steps.only]\ncommand = "true"\n'
TWO = 'schedule = "0 9-17 * * 1-5"\n[steps.a]\ncommand = "true"\n[steps.b]\ncommand = "true"\n'


def test_list_and_dags_say_1_step_and_keep_their_columns(tmp_path: Path) -> None:
    """`dagd dags` with a paused DAG, a long id and a long schedule: every column starts at
    the same place on every line; one step is `1 step`."""
    long_id = "a_dag_with_an_id_longer_than_24"
    with serving(tmp_path, {"one": ONE, "report": TWO, long_id: ONE}) as d:
        cfg = ["--config", str(d.config)]
        listed = dagd("list", *cfg)
        assert dagd("pause", "report", *cfg).returncode == 0
        dags = dagd("dags", *cfg)
    assert listed.returncode == 0, listed.stderr
    assert "1 step" in listed.stdout and "1 steps" not in listed.stdout
    assert dags.returncode == 0, dags.stderr
    lines = dags.stdout.splitlines()
    assert len(lines) == 3 and "1 steps" not in dags.stdout
    assert len({line.index("next:") for line in lines}) == 1, dags.stdout
    assert len({line.index("step") for line in lines}) == 1, dags.stdout
    assert "paused" in next(line for line in lines if line.startswith("report "))
