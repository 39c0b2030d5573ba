"""dagd's own secrets and its auth edge: a token variable never reaches a step, a token
variable that is missing stops `dagd serve` with one line, and earlier wrong tokens never
delay a right one (only failures wait).

Real daemons, real steps, real WebSocket clients on 127.0.0.1 and real `dagd` processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from wshelp import OP_TOKEN, Harness, harness, make_config, running

from dagd.core.config import ConfigError, parse_config
from dagd.net.auth import AuthThrottle, TokenBook

SECRET = "s3cret-operator-token-value"
ENV_TOKENS = """
[[auth.tokens]]
name = "ops"
env = "DAGD_OPERATOR_TOKEN"
"""
# A step that prints its whole environment, and one that tries to reach the secret by name.
PRINT_ENV = """
[env]
COPY = "[$DAGD_OPERATOR_TOKEN]"

[steps.show]
command = "env; echo copy=$COPY; echo direct=[$DAGD_OPERATOR_TOKEN] [$DAGD_TOKEN]"
"""


async def _run_and_read_log(tmp_path: Path) -> str:
    config = make_config(tmp_path, tokens=ENV_TOKENS, dags={"printenv": PRINT_ENV})
    async with running(tmp_path, config=config) as daemon:
        run_id = await daemon.trigger("printenv", {})
        with trio.fail_after(10):
            while True:
                found = await daemon.store.get_run(run_id)
                if found is not None and found[0].status in ("success", "failed"):
                    break
                await trio.sleep(0.02)
        assert found[0].status == "success"
    logs = list((config.log_dir / "printenv").rglob("*.out"))
    assert len(logs) == 1
    return logs[0].read_text()


async def test_a_token_variable_never_reaches_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGD_OPERATOR_TOKEN", SECRET)
    monkeypatch.setenv("DAGD_TOKEN", "client-token-of-the-cli")  # the `dagd` commands' one
    monkeypatch.setenv("UNRELATED_VARIABLE", "still-passed")
    out = await _run_and_read_log(tmp_path)
    assert SECRET not in out
    assert "client-token-of-the-cli" not in out
    assert "DAGD_OPERATOR_TOKEN=" not in out
    assert "direct=[] []" in out  # nor by name; nor through a `$VAR` in the DAG's env (COPY)
    assert "UNRELATED_VARIABLE=still-passed" in out  # the rest of the environment is kept


def test_dagd_run_hides_the_token_variables_too(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "printenv.toml").write_text(PRINT_ENV)
    (tmp_path / "config.toml").write_text(ENV_TOKENS)
    env = {**os.environ, "DAGD_OPERATOR_TOKEN": SECRET, "PYTHONPATH": _pythonpath()}
    done = subprocess.run(
        [sys.executable, "-m", "dagd", "run", "printenv", "--plain"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = next((tmp_path / "state" / "logs").rglob("*.out")).read_text()
    assert SECRET not in out and "direct=[] []" in out


def _pythonpath() -> str:
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_serve_with_a_missing_token_variable_says_one_line(
    tmp_path: Path, value: str | None
) -> None:
    (tmp_path / "config.toml").write_text("[server]\nport = 0\n" + ENV_TOKENS)
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    env.pop("DAGD_OPERATOR_TOKEN", None)
    if value is not None:
        env["DAGD_OPERATOR_TOKEN"] = value
    done = subprocess.run(
        [sys.executable, "-m", "dagd", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "auth.tokens[0]" in lines[0] and "DAGD_OPERATOR_TOKEN" in lines[0]
    assert not (tmp_path / "state").exists()  # refused before anything was touched


def test_a_bad_sha256_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    for digest in ["abc", "z" * 64, "a" * 63]:
        text = f'[[auth.tokens]]\nsha256 = "{digest}"\n'
        with pytest.raises(ConfigError, match=r"auth\.tokens\[0\]\.sha256"):
            parse_config(text, tmp_path)


def test_token_book_raises_config_error_for_an_unset_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGD_OPERATOR_TOKEN", raising=False)
    config = parse_config(ENV_TOKENS, tmp_path)
    with pytest.raises(ConfigError, match="DAGD_OPERATOR_TOKEN"):
        TokenBook.from_config(config)
    assert config.secret_env_names == ("DAGD_TOKEN", "DAGD_OPERATOR_TOKEN")


# ------------------------------------------------------------------ throttling


async def _auth(h: Harness, token: str) -> str:
    client = await h.connect("trio", token=None)
    await client.send({"type": "auth", "token": token})
    answer = await client.recv()
    await client.close()
    return str(answer.get("code") or answer["type"])


async def test_a_right_token_is_not_delayed_by_earlier_wrong_ones(tmp_path: Path) -> None:
    async with harness(tmp_path, None) as h:  # type: ignore[arg-type]  # trio clients only
        async with trio.open_nursery() as nursery:  # four wrong tokens from 127.0.0.1
            for _ in range(4):
                nursery.start_soon(_auth, h, "wrong-token")
        # Before, the next check from this address waited 2 s: now a right token does not.
        started = trio.current_time()
        assert await _auth(h, OP_TOKEN) == "auth_success"
        assert trio.current_time() - started < 0.5
        # Failures are still slowed down: the next wrong one waits (0.25 s after the second).
        assert await _auth(h, "wrong-again") == "auth_failed"
        slowed = trio.current_time()
        assert await _auth(h, "wrong-again") == "auth_failed"
        assert trio.current_time() - slowed >= 0.25


def test_throttle_counts_failures_and_delays_only_them() -> None:
    now = [0.0]
    throttle = AuthThrottle(clock=lambda: now[0])
    delays = []
    for _ in range(8):
        throttle.failed("1.2.3.4")
        delays.append(throttle.delay("1.2.3.4"))
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert throttle.delay("5.6.7.8") == 0.0  # another address is not affected
    now[0] += 301
    throttle.failed("1.2.3.4")
    assert throttle.delay("1.2.3.4") == 0.0  # forgotten after 300 s
