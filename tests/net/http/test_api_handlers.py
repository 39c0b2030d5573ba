"""The JSON API's handlers with a real daemon, answered in process (no socket): every route,
its shapes (the protocol's, minus the envelope), its validation and its error statuses.
tests/net/http/test_api.py asks the same over a real socket."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from apihelp import Answer, call_route, check_documented
from daemonhelp import wait_status
from wshelp import READ_TOKEN, TOKENS, make_config, running

from dagd.core.model import RunStatus
from dagd.core.protocol import answers
from dagd.core.protocol.codec import to_wire
from dagd.core.records import RunRecord
from dagd.daemon import daemon as daemon_module
from dagd.daemon.api import DaemonService
from dagd.daemon.daemon import Daemon
from dagd.daemon.errors import DaemonError
from dagd.net.auth import AuthThrottle, TokenBook
from dagd.net.http.api import MAX_RUN_LISTS, STATUS, JsonApi
from dagd.net.http.message import Route


class Api:
    def __init__(self, daemon: Daemon, routes: list[Route]) -> None:
        self.daemon = daemon
        self.routes = routes

    async def __call__(self, method: str, path: str, **kw: Any) -> Answer:
        """The answer, checked against docs/openapi.yaml (status, type, headers, body)."""
        answer = await call_route(self.routes, method, path, **kw)
        check_documented(method, path, answer)
        return answer


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = make_config(tmp_path)
    async with running(tmp_path, config=config) as daemon:
        book = TokenBook.from_config(config)
        yield Api(daemon, JsonApi(daemon, book, AuthThrottle()).routes())


def unwrapped(message: Any) -> Any:
    wire = to_wire(message)
    del wire["type"]
    return wire


async def finished(api: Api, run_id: str, *statuses: str) -> dict[str, Any]:
    """The run as the API gives it, once the store has committed one of `statuses`."""
    await wait_status(api.daemon, run_id, statuses)
    run: dict[str, Any] = (await api("GET", f"/api/v1/runs/{run_id}")).json()
    return run


async def test_dags_are_the_dags_answer_without_envelope(api: Api) -> None:
    answer = await api("GET", "/api/v1/dags", token=READ_TOKEN)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert [d["dagId"] for d in body["dags"]] == sorted(
        ["alpha", "beta", "slow", "failing", "withparams"]
    )
    assert body == unwrapped(answers.DagList(api.daemon.list_dags(), api.daemon.broken_files()))
    assert body["brokenFiles"] == []


async def test_one_dag_with_steps_edges_and_levels(api: Api) -> None:
    body = (await api("GET", "/api/v1/dags/alpha", token=READ_TOKEN)).json()
    assert body["summary"]["description"] == "two quick python steps"
    assert [(s["stepId"], s["level"]) for s in body["steps"]] == [("one", 0), ("two", 1)]
    assert body["edges"] == [{"source": "one", "target": "two"}]
    assert body == unwrapped(api.daemon.dag_detail("alpha"))
    missing = await api("GET", "/api/v1/dags/nope")
    assert (missing.status, missing.code) == (404, "unknown_dag")


async def test_trigger_with_params_then_read_the_run(api: Api) -> None:
    answer = await api(
        "POST", "/api/v1/dags/withparams/runs", body={"params": {"date": "2024-02-02"}}
    )
    assert answer.status == 201
    run_id = answer.json()["runId"]
    assert answer.json() == {"dagId": "withparams", "runId": run_id}
    assert answer.headers["location"] == f"/api/v1/runs/{run_id}"
    run = await finished(api, run_id, "success")
    assert run["record"]["params"] == {"date": "2024-02-02"}
    assert run["trigger"] == "manual"
    assert [s["stepId"] for s in run["steps"]] == ["echo"]
    assert run == unwrapped(await api.daemon.run_detail(run_id))
    listed = (await api("GET", "/api/v1/runs", query={"dag": ["withparams"]})).json()
    assert [r["runId"] for r in listed["runs"]] == [run_id]


@pytest.mark.parametrize("body", [b"", b"  \n", b"{}", b'{"params": {}}'])
async def test_trigger_without_params_takes_the_defaults(api: Api, body: bytes) -> None:
    answer = await api("POST", "/api/v1/dags/withparams/runs", body=body)
    assert answer.status == 201
    run = await finished(api, answer.json()["runId"], "success")
    assert run["record"]["params"] == {"date": "2024-01-01"}


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'"params"',
        b"null",
        b'{"params": NaN}',
        b'{"params": {"date": Infinity}}',
        b'{"params": {"date": 1e999999}}',
        b'{"params": {"date": "\\ud800"}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"params": {"date": ' + b"9" * 5000 + b"}}",
        b'{"params": {"date": ["x"]}}',
        b'{"params": {"date": {"a": 1}}}',
        b'{"params": {"date": null}}',
        b'{"params": "date=1"}',
        b'{"params": {}, "dagId": "alpha"}',
        b'{"params": {}, "requestId": 1}',
        b'{"params": {}, "type": "cancel"}',
        b"\xff\xfe{}",
        b'{"params": {"' + b"p" * 300 + b'": 1}}',
    ],
)
async def test_hostile_trigger_bodies_are_400(api: Api, body: bytes) -> None:
    answer = await api("POST", "/api/v1/dags/withparams/runs", body=body)
    assert (answer.status, answer.code) == (400, "invalid_message"), answer.body[:200]
    assert len(answer.body) < 1000
    assert (await api("GET", "/api/v1/runs")).json()["runs"] == []  # nothing queued


async def test_params_the_dag_does_not_declare_are_422(api: Api) -> None:
    answer = await api("POST", "/api/v1/dags/withparams/runs", body={"params": {"dat": "x"}})
    assert (answer.status, answer.code) == (422, "invalid_params")
    assert "dat" in answer.json()["message"]
    answer = await api("POST", "/api/v1/dags/nope/runs", body={})
    assert (answer.status, answer.code) == (404, "unknown_dag")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": ["0"]}, "limit must be an integer from 1 to 1000"),
        ({"limit": ["1001"]}, "limit must be an integer from 1 to 1000"),
        ({"limit": ["-1"]}, "limit"),
        ({"limit": ["abc"]}, "limit"),
        ({"limit": ["1e3"]}, "limit"),
        ({"limit": [" 5"]}, "limit"),
        ({"limit": ["\u0663"]}, "limit"),  # an Arabic-Indic 3: int() reads it, we do not
        ({"limit": ["9" * 5000]}, "limit"),
        ({"limit": ["5", "6"]}, "given twice"),
        ({"dag_id": ["alpha"]}, "unknown query parameter 'dag_id'"),
        ({"\udc80": ["x"]}, "unknown query parameter"),
    ],
)
async def test_bad_runs_queries_are_400(
    api: Api, query: dict[str, list[str]], message: str
) -> None:
    answer = await api("GET", "/api/v1/runs", query=query)
    assert (answer.status, answer.code) == (400, "invalid_message")
    assert message in answer.json()["message"]


async def test_runs_limit_and_dag_filter(api: Api) -> None:
    ids = [(await api("POST", "/api/v1/dags/beta/runs")).json()["runId"] for _ in range(3)]
    await api("POST", "/api/v1/dags/alpha/runs")
    beta = (await api("GET", "/api/v1/runs", query={"dag": ["beta"], "limit": ["2"]})).json()
    assert [r["runId"] for r in beta["runs"]] == ids[::-1][:2]  # newest first
    every = (await api("GET", "/api/v1/runs")).json()["runs"]
    assert len(every) == 4
    unknown = await api("GET", "/api/v1/runs", query={"dag": ["nope"]})
    assert (unknown.status, unknown.code) == (404, "unknown_dag")


async def test_cancel_and_retry(api: Api) -> None:
    run_id = (await api("POST", "/api/v1/dags/slow/runs")).json()["runId"]
    too_soon = await api("POST", f"/api/v1/runs/{run_id}/retry")
    assert (too_soon.status, too_soon.code) == (409, "not_finished")
    cancelled = await api("POST", f"/api/v1/runs/{run_id}/cancel")
    assert (cancelled.status, cancelled.json()) == (202, {"runId": run_id})
    await finished(api, run_id, "cancelled")
    again = await api("POST", f"/api/v1/runs/{run_id}/cancel")
    assert (again.status, again.code) == (409, "not_running")
    retried = await api("POST", f"/api/v1/runs/{run_id}/retry")
    assert (retried.status, retried.json()) == (202, {"runId": run_id})
    run = (await api("GET", f"/api/v1/runs/{run_id}")).json()
    assert run["record"]["status"] in ("queued", "running")
    await api("POST", f"/api/v1/runs/{run_id}/cancel")

    ok = (await api("POST", "/api/v1/dags/beta/runs")).json()["runId"]
    await finished(api, ok, "success")
    refused = await api("POST", f"/api/v1/runs/{ok}/retry")
    assert (refused.status, refused.code) == (409, "not_retryable")
    for method, path in [("POST", "/cancel"), ("POST", "/retry"), ("GET", "")]:
        unknown = await api(method, f"/api/v1/runs/no-such-run{path}")
        assert (unknown.status, unknown.code) == (404, "unknown_run")


async def test_pause_unpause(api: Api) -> None:
    answer = await api("POST", "/api/v1/dags/alpha/pause")
    assert (answer.status, answer.json()) == (200, {"dagId": "alpha"})
    dag = (await api("GET", "/api/v1/dags/alpha")).json()
    assert dag["summary"]["paused"] is True
    answer = await api("POST", "/api/v1/dags/alpha/unpause")
    assert (answer.status, answer.json()) == (200, {"dagId": "alpha", "nextRun": None})
    answer = await api("POST", "/api/v1/dags/nope/pause")
    assert (answer.status, answer.code) == (404, "unknown_dag")
    answer = await api("POST", "/api/v1/dags/alpha/pause", body={"now": True})
    assert (answer.status, answer.code) == (400, "invalid_message")


async def test_backfill_of_a_dag_without_schedule_is_a_conflict(api: Api) -> None:
    body = {"start": "2024-01-01", "end": "2024-01-02"}
    answer = await api("POST", "/api/v1/dags/alpha/backfill", body=body)
    assert (answer.status, answer.code) == (409, "no_schedule")
    answer = await api("POST", "/api/v1/dags/alpha/backfill", body={"start": "2024-01-01"})
    assert (answer.status, answer.code) == (400, "invalid_message")
    assert "end" in answer.json()["message"]


async def test_roles_and_tokens(api: Api) -> None:
    for method, path in [
        ("POST", "/api/v1/dags/alpha/runs"),
        ("POST", "/api/v1/dags/alpha/pause"),
        ("POST", "/api/v1/dags/alpha/unpause"),
        ("POST", "/api/v1/dags/alpha/backfill"),
        ("POST", "/api/v1/runs/x/cancel"),
        ("POST", "/api/v1/runs/x/retry"),
    ]:
        forbidden = await api(method, path, token=READ_TOKEN)
        assert (forbidden.status, forbidden.code) == (403, "forbidden"), path
        assert re.search(r"role is 'read': it cannot \w+$", forbidden.json()["message"])
    for token, code in [(None, "auth_required"), ("wrong", "auth_failed")]:
        refused = await api("GET", "/api/v1/dags/nope", token=token, peer=f"10.1.1.1:{code}")
        assert (refused.status, refused.code) == (401, code)  # not 404: nothing is revealed
        assert refused.headers["www-authenticate"].startswith('Bearer realm="dagd"')
    assert (await api("GET", "/api/v1/runs")).json() == {"runs": []}  # nothing happened


def test_every_daemon_error_code_has_a_status() -> None:
    """Every code DaemonError's docstring names, and every code a DaemonService method says
    it raises, has its row in the table."""
    documented = set(re.findall(r"`([a-z_]+)`", DaemonError.__doc__ or "")) - {"code", "message"}
    for name in dir(DaemonService):
        doc = getattr(DaemonService, name).__doc__ or ""
        for listed in re.findall(r"DaemonError codes?: ([a-z_, \n]+)", doc):
            documented.update(re.findall(r"[a-z_]+", listed))
    assert {"unknown_run", "not_retryable", "invalid_range"} <= documented
    assert documented <= set(STATUS)
    assert all(400 <= status < 600 for status in STATUS.values())


class Refusing:
    """A DaemonService whose every method raises DaemonError(code)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: Any, **kw: Any) -> Any:
            raise DaemonError(self.code, f"refused: {self.code}")

        async def refuse_async(*args: Any, **kw: Any) -> Any:
            refuse()

        return refuse if name in ("list_dags", "dag_detail") else refuse_async


@pytest.mark.parametrize("code", sorted(STATUS))
async def test_daemon_errors_map_to_their_status(code: str, tmp_path: Path) -> None:
    book = TokenBook.from_config(make_config(tmp_path))
    routes = JsonApi(Refusing(code), book).routes()  # type: ignore[arg-type]
    for method, path in [
        ("GET", "/api/v1/dags"),
        ("POST", "/api/v1/dags/a/runs"),
        ("POST", "/api/v1/runs/r/retry"),
    ]:
        answer = await call_route(routes, method, path)
        assert (answer.status, answer.code) == (STATUS[code], code)


async def test_an_unmapped_code_is_a_500_without_detail(tmp_path: Path) -> None:
    book = TokenBook.from_config(make_config(tmp_path))
    routes = JsonApi(Refusing("brand_new"), book).routes()  # type: ignore[arg-type]
    answer = await call_route(routes, "GET", "/api/v1/runs")
    assert (answer.status, answer.code) == (500, "internal")


#: stdout: a line naming the attempt, 100,000 "x", two bytes that are not UTF-8; stderr: one
#: line. The first attempt fails, the second succeeds.
TALK = r"""
[steps.talk]
command = '''
printf 'attempt %s\n' $DAGD_ATTEMPT
head -c 100000 /dev/zero | tr '\0' x
printf '\377\376'
echo oops >&2
test $DAGD_ATTEMPT -ge 2
'''
retries = 1
"""


def talk_out(attempt: int) -> bytes:
    return f"attempt {attempt}\n".encode() + b"x" * 100_000 + b"\xff\xfe"


@pytest.fixture
async def talked(tmp_path: Path) -> AsyncIterator[tuple[Api, str]]:
    config = make_config(tmp_path, dags={"talk": TALK})
    async with running(tmp_path, config=config) as daemon:
        api = Api(daemon, JsonApi(daemon, TokenBook.from_config(config)).routes())
        run_id = (await api("POST", "/api/v1/dags/talk/runs")).json()["runId"]
        await finished(api, run_id, "success")
        yield api, run_id


async def test_a_step_log_whole_by_attempt_and_stream(talked: tuple[Api, str]) -> None:
    api, run_id = talked
    path = f"/api/v1/runs/{run_id}/steps/talk/log"
    latest = await api("GET", path, token=READ_TOKEN)
    assert latest.status == 200
    assert latest.headers["content-type"] == "application/octet-stream"
    assert latest.body == talk_out(2)  # more than one daemon read (64 KiB) in one answer
    size = len(talk_out(2))
    assert latest.headers["dagd-log-attempt"] == "2"
    assert latest.headers["dagd-log-stream"] == "stdout"
    assert latest.headers["dagd-log-size"] == str(size)
    assert latest.headers["dagd-log-next-offset"] == str(size)
    assert latest.headers["dagd-log-final"] == "true"
    first = await api("GET", path, query={"attempt": ["1"]})
    assert first.body == talk_out(1) and first.headers["dagd-log-attempt"] == "1"
    err = await api("GET", path, query={"attempt": ["1"], "stream": ["stderr"]})
    assert err.body == b"oops\n" and err.headers["dagd-log-stream"] == "stderr"


async def test_a_step_log_by_byte_range(talked: tuple[Api, str]) -> None:
    api, run_id = talked
    path = f"/api/v1/runs/{run_id}/steps/talk/log"
    whole, got, offset = talk_out(2), b"", 0
    while True:  # what a script does: read on from next-offset until final and at the size
        answer = await api("GET", path, query={"offset": [str(offset)], "length": ["7000"]})
        assert len(answer.body) <= 7000
        got += answer.body
        offset = int(answer.headers["dagd-log-next-offset"])
        if answer.headers["dagd-log-final"] == "true" and offset >= int(
            answer.headers["dagd-log-size"]
        ):
            break
    assert got == whole
    tail = await api("GET", path, query={"offset": [str(len(whole) - 2)]})
    assert tail.body == b"\xff\xfe"  # raw bytes, not decoded
    past = await api("GET", path, query={"offset": [str(len(whole) + 100)]})
    assert past.status == 200 and past.body == b""
    assert past.headers["dagd-log-next-offset"] == str(len(whole) + 100)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"attempt": ["3"]}, 404, "unknown_attempt"),
        ({"attempt": ["0"]}, 400, "invalid_message"),
        ({"attempt": ["x"]}, 400, "invalid_message"),
        ({"stream": ["out"]}, 400, "invalid_message"),
        ({"stream": ["both"]}, 400, "invalid_message"),
        ({"offset": ["-1"]}, 400, "invalid_message"),
        ({"offset": ["9" * 30]}, 400, "invalid_message"),
        ({"length": ["0"]}, 400, "invalid_message"),
        ({"length": [str(1024 * 1024 + 1)]}, 400, "invalid_message"),
        ({"follow": ["1"]}, 400, "invalid_message"),
    ],
)
async def test_bad_log_requests(
    talked: tuple[Api, str], query: dict[str, list[str]], status: int, code: str
) -> None:
    api, run_id = talked
    answer = await api("GET", f"/api/v1/runs/{run_id}/steps/talk/log", query=query)
    assert (answer.status, answer.code) == (status, code)


async def test_logs_of_unknown_steps_and_runs(talked: tuple[Api, str]) -> None:
    api, run_id = talked
    for path, code in [
        (f"/api/v1/runs/{run_id}/steps/nope/log", "unknown_step"),
        (f"/api/v1/runs/{run_id}/steps/../log", "unknown_step"),
        (f"/api/v1/runs/{run_id}/steps/a\x00b/log", "unknown_step"),
        ("/api/v1/runs/nope/steps/talk/log", "unknown_run"),
        ("/api/v1/runs/../steps/talk/log", "unknown_run"),
    ]:
        answer = await api("GET", path)
        assert (answer.status, answer.code) == (404, code), path


class CountingDaemon:
    """list_runs answers from a list and counts its calls; runs_version is set by the test."""

    def __init__(self, runs: list[RunRecord]) -> None:
        self.runs = runs
        self.reads = 0
        self.runs_version: tuple[int, int] = (0, 0)

    async def list_runs(self, dag_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        self.reads += 1
        return self.runs[:limit]


def record(n: int) -> RunRecord:
    return RunRecord("d", f"run{n}", RunStatus.SUCCESS, {}, 1.0 + n, 2.0 + n, 3.0 + n)


async def test_a_run_list_is_read_again_only_when_the_runs_may_have_changed(
    tmp_path: Path,
) -> None:
    daemon = CountingDaemon([record(1), record(2)])
    routes = JsonApi(daemon, TokenBook.from_config(make_config(tmp_path))).routes()  # type: ignore[arg-type]
    first = await call_route(routes, "GET", "/api/v1/runs")
    again = await call_route(routes, "GET", "/api/v1/runs")
    assert again == first and daemon.reads == 1
    await call_route(routes, "GET", "/api/v1/runs", query={"limit": ["1"]})
    assert daemon.reads == 2  # another question
    daemon.runs = [record(1)]
    daemon.runs_version = (0, 1)  # e.g. history retention deleted a run
    after = await call_route(routes, "GET", "/api/v1/runs")
    assert daemon.reads == 3
    assert [r["runId"] for r in after.json()["runs"]] == ["run1"]
    for n in range(MAX_RUN_LISTS + 5):  # many different questions: memory stays bounded
        await call_route(routes, "GET", "/api/v1/runs", query={"limit": [str(100 + n)]})
    assert daemon.reads == 3 + MAX_RUN_LISTS + 5


async def test_runs_version_moves_with_writes_and_with_history_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "FIRST_PRUNE_DELAY", 0.05)
    monkeypatch.setattr(daemon_module, "PRUNE_INTERVAL", 0.05)
    config = make_config(tmp_path, tokens=f"{TOKENS}\n[history]\nkeep_runs = 1\n")
    async with running(tmp_path, config=config) as daemon:
        api = Api(daemon, JsonApi(daemon, TokenBook.from_config(config)).routes())
        before = daemon.runs_version
        first = (await api("POST", "/api/v1/dags/beta/runs")).json()["runId"]
        assert daemon.runs_version > before  # the trigger's commit
        await wait_status(daemon, first, ["success"])
        pruned = daemon.runs_version[1]  # nothing to delete yet: one finished run
        second = (await api("POST", "/api/v1/dags/beta/runs")).json()["runId"]
        await wait_status(daemon, second, ["success"])
        with trio.fail_after(10):  # retention deletes the older run within a prune interval
            while [r.run_id for r in await daemon.list_runs("beta")] != [second]:
                await trio.sleep(0.02)
        assert daemon.runs_version[1] > pruned
        listed = (await api("GET", "/api/v1/runs", query={"dag": ["beta"]})).json()
        assert [r["runId"] for r in listed["runs"]] == [second]
