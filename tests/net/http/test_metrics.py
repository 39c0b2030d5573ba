"""GET /metrics's handler on a real embedded daemon after real runs, without a socket: the
families a scraper parses, their labels and values, OpenMetrics on request, and the token
when `metrics_auth` asks for one. tests/net/http/test_ops_http.py asks over the port."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from daemonhelp import daemon_config, wait_status, write_dag_file
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from dagd.app import open_daemon
from dagd.net.auth import AuthThrottle, TokenBook, TokenEntry
from dagd.net.http.message import HttpRequest, HttpResponse
from dagd.net.http.metrics import (
    DagdCollector,
    metrics_handler,
    metrics_registry,
)

OK = '[steps.a]\ncommand = "true"\n[steps.b]\ncommand = "sleep 0.2"\ndepends_on = ["a"]\n'
BAD = '[steps.a]\ncommand = "exit 3"\n[steps.b]\ncommand = "true"\ndepends_on = ["a"]\n'
NET = SimpleNamespace(
    connections=3,
    authenticated_clients=2,
    slow_closed=1,
    events_delivered=40,
    events_replayed=7,
    http_connections=4,
    http_requests=12,
    handshaking=5,
    busy_refused=6,
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text-format scrape by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


async def scrape(registry: Any, accept: str | None = None, **kw: Any) -> HttpResponse:
    headers = {} if accept is None else {"accept": accept}
    request = HttpRequest("GET", "/metrics", headers=headers, **kw)
    return await metrics_handler(registry)(request, {})


async def test_a_runs_counters_and_durations_appear_with_their_labels(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, reload_interval=3600)
    write_dag_file(config.dags_dir, "ok", OK)
    write_dag_file(config.dags_dir, "bad", BAD)
    async with open_daemon(config) as daemon:
        registry = metrics_registry(daemon, NET, "9.9.9")
        ok, _ = await wait_status(daemon, await daemon.trigger("ok"))
        bad, _ = await wait_status(daemon, await daemon.trigger("bad"))
        response = await scrape(registry)
        seq = daemon.committed_seq
    assert response.status == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    found = samples(response.body.decode())
    assert value(found, "dagd_build_info", version="9.9.9") == 1
    assert value(found, "dagd_healthy") == 1
    assert value(found, "dagd_dags_loaded") == 2
    assert value(found, "dagd_runs_started_total", dag="ok") == 1
    assert value(found, "dagd_runs_started_total", dag="bad") == 1
    assert value(found, "dagd_runs_finished_total", dag="ok", status="success") == 1
    assert value(found, "dagd_runs_finished_total", dag="bad", status="failed") == 1
    assert (
        "dagd_runs_finished_total",
        frozenset({("dag", "ok"), ("status", "failed")}),
    ) not in found
    assert value(found, "dagd_steps_finished_total", dag="ok", status="success") == 2
    assert value(found, "dagd_steps_finished_total", dag="bad", status="failed") == 1
    assert value(found, "dagd_steps_finished_total", dag="bad", status="upstream_failed") == 1
    # The run's duration is its record's, from running to finished.
    assert ok.started_at is not None and ok.ended_at is not None
    took = ok.ended_at - ok.started_at
    assert took >= 0.2
    run = {"dag": "ok", "status": "success"}
    assert value(found, "dagd_run_duration_seconds_count", **run) == 1
    assert value(found, "dagd_run_duration_seconds_sum", **run) == pytest.approx(took, abs=1e-6)
    assert value(found, "dagd_run_duration_seconds_bucket", le="0.1", **run) == 0
    assert value(found, "dagd_run_duration_seconds_bucket", le="+Inf", **run) == 1
    step_sum = value(found, "dagd_step_duration_seconds_sum", **run)
    assert 0.2 <= step_sum <= took + 1e-6
    assert value(found, "dagd_step_duration_seconds_count", dag="bad", status="failed") == 1
    assert value(found, "dagd_runs_queued", dag="ok") == 0
    assert value(found, "dagd_runs_running", dag="bad") == 0
    assert value(found, "dagd_event_log_seq") == seq
    assert value(found, "dagd_store_writable") == 1
    assert value(found, "dagd_store_commit_duration_seconds_count") > 0
    assert ("dagd_event_loop_lag_seconds_count", frozenset()) in found
    assert value(found, "dagd_websocket_clients") == 3
    assert value(found, "dagd_websocket_clients_authenticated") == 2
    assert value(found, "dagd_websocket_slow_consumer_closes_total") == 1
    assert value(found, "dagd_events_delivered_total", source="live") == 40
    assert value(found, "dagd_events_delivered_total", source="replay") == 7
    assert value(found, "dagd_http_connections") == 4
    assert value(found, "dagd_http_requests_total") == 12
    assert value(found, "dagd_handshakes_in_progress") == 5
    assert value(found, "dagd_connections_refused_busy_total") == 6
    assert value(found, "process_open_fds") > 0
    assert bad.status == "failed"


async def test_openmetrics_when_the_scraper_asks_for_it(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, reload_interval=3600)
    write_dag_file(config.dags_dir, "ok", OK)
    async with open_daemon(config) as daemon:
        await wait_status(daemon, await daemon.trigger("ok"))
        registry = metrics_registry(daemon, None, "9.9.9")
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        response = await scrape(registry, accept)
        plain = await scrape(registry, "text/plain")
    assert response.content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = response.body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["dagd_runs_started"].type == "counter"
    assert families["dagd_run_duration_seconds"].unit == "seconds"
    [started] = [s for s in families["dagd_runs_started"].samples if s.name.endswith("_total")]
    assert (started.labels, started.value) == ({"dag": "ok"}, 1)
    assert "dagd_websocket_clients" not in families  # no server: no network families
    assert plain.content_type.startswith("text/plain; version=0.0.4")


async def test_each_daemon_has_its_own_registry(tmp_path: Path) -> None:
    """Two daemons in one process: their metrics never clash nor mix."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    c1, c2 = daemon_config(one, reload_interval=3600), daemon_config(two, reload_interval=3600)
    write_dag_file(c1.dags_dir, "ok", OK)
    async with open_daemon(c1) as d1, open_daemon(c2) as d2:
        await wait_status(d1, await d1.trigger("ok"))
        first = samples((await scrape(metrics_registry(d1))).body.decode())
        second = samples((await scrape(metrics_registry(d2))).body.decode())
    assert value(first, "dagd_runs_started_total", dag="ok") == 1
    assert value(second, "dagd_dags_loaded") == 0
    assert not any(name == "dagd_runs_started_total" for name, _ in second)


READ = "metrics-reader"
BOOK = TokenBook([TokenEntry(hashlib.sha256(READ.encode()).digest(), "read", "prom")])


async def test_with_metrics_auth_a_token_of_any_role_is_needed(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, reload_interval=3600)
    async with open_daemon(config) as daemon:
        handler = metrics_handler(metrics_registry(daemon), auth=(BOOK, AuthThrottle()))

        async def get(authorization: str | None) -> HttpResponse:
            headers = {} if authorization is None else {"authorization": authorization}
            return await handler(
                HttpRequest("GET", "/metrics", headers=headers, peer="10.1.1.1:9"), {}
            )

        missing, wrong, right = (
            await get(None),
            await get("Bearer nope"),
            await get(f"Bearer {READ}"),
        )
    assert (missing.status, orjson.loads(missing.body)["code"]) == (401, "auth_required")
    assert dict(missing.headers)["www-authenticate"].startswith("Bearer")
    assert (wrong.status, orjson.loads(wrong.body)["code"]) == (401, "auth_failed")
    assert right.status == 200 and b"dagd_dags_loaded" in right.body


async def test_openmetrics_bytes_are_the_negotiated_escapings(tmp_path: Path) -> None:
    """dagd writes OpenMetrics with the cheaper allow-utf-8 escaping when a scraper negotiates
    underscores (the default): the same bytes, because every name is a legacy Prometheus name.
    The escapings that do change names are answered as prometheus_client writes them."""
    config = daemon_config(tmp_path, reload_interval=3600)
    write_dag_file(config.dags_dir, "bad", BAD)
    async with open_daemon(config) as daemon:
        await wait_status(daemon, await daemon.trigger("bad"))
        registry = CollectorRegistry()
        registry.register(DagdCollector(daemon, NET, "9.9.9"))
        for accept in (
            "application/openmetrics-text",
            "application/openmetrics-text; version=1.0.0; escaping=underscores",
            "application/openmetrics-text; version=1.0.0; escaping=dots",
            "application/openmetrics-text; version=1.0.0; escaping=values",
        ):
            encode, content_type = choose_encoder(accept)
            expected = encode(registry)
            answered = await metrics_handler(registry)(
                HttpRequest("GET", "/metrics", headers={"accept": accept}), {}
            )
            assert (answered.body, answered.content_type) == (expected, content_type), accept
        families = list(registry.collect())
    legacy = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
    assert len(families) > 15
    for family in families:
        assert legacy.match(family.name), family.name
        for sample in family.samples:
            assert legacy.match(sample.name), sample.name
            assert all(legacy.match(label) for label in sample.labels), sample
