"""`GET /metrics`: dagd's state in the Prometheus text format, or OpenMetrics on request.

Each server has its own `CollectorRegistry` (the process-wide default one refuses a second
daemon's metric names, and would mix two daemons in one process). On it: `DagdCollector`,
which reads the daemon and the network layer at scrape time, and prometheus_client's
`ProcessCollector` (CPU seconds, memory, open descriptors, start time: a few reads of /proc).
Nothing here counts anything: the daemon counts into plain dicts as it commits events
(dagd/daemon/stats.py), the server into plain ints, and a scrape turns them into metric
families. A scrape therefore costs in proportion to the DAGs and statuses seen, never to the
history (bench/metrics_scrape.py).

The metrics, their labels and their meaning are listed in docs/http.md ("GET /metrics"). A new
group of metrics (as the pools' `dagd_pool_slots_in_use{pool}`) is one more function in
`FAMILIES`, reading what `DaemonService` gives, and a row in that table.

The `Accept` header chooses the format (`prometheus_client.exposition.choose_encoder`):
`application/openmetrics-text` gets OpenMetrics 1.0, anything else the text format 0.0.4.
With `[server] metrics_auth = true` the route asks for `Authorization: Bearer <token>`, any
valid token of either role (dagd/net/http/bearer.py); by default it asks for none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar, cast

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.openmetrics.exposition import generate_latest as _untyped_latest
from prometheus_client.registry import Collector

from dagd.core.pools import PoolUsage
from dagd.daemon.api import DaemonHealth, DaemonService, DaemonStats, Histogram
from dagd.net.auth import AuthThrottle, TokenBook
from dagd.net.http.bearer import bearer_entry
from dagd.net.http.context import HttpContext, NetStats
from dagd.net.http.message import Handler, HttpRequest, HttpResponse, Route

PATH = "/metrics"
OPENMETRICS = "application/openmetrics-text"
#: prometheus_client's OpenMetrics encoder (untyped there): (registry, escaping, version) -> bytes
openmetrics_latest = cast(Callable[..., bytes], _untyped_latest)


class _Scrape:
    """What one scrape reads, read once: the daemon's health (a snapshot) and stats (live)."""

    __slots__ = ("health", "net", "pools", "stats", "version")

    def __init__(self, daemon: DaemonService, net: NetStats | None, version: str) -> None:
        self.health: DaemonHealth = daemon.health()
        self.pools: list[PoolUsage] = daemon.list_pools()
        self.stats: DaemonStats = daemon.stats
        self.net = net
        self.version = version


def _daemon(s: _Scrape) -> Iterator[Metric]:
    h = s.health
    yield InfoMetricFamily("dagd_build", "dagd's version.", value={"version": s.version})
    yield GaugeMetricFamily(
        "dagd_healthy",
        "1 while GET /healthz answers 200: the state file writes and runs are accepted.",
        value=1 if h.healthy else 0,
    )
    yield GaugeMetricFamily("dagd_dags_loaded", "DAGs loaded from the DAG folder.", value=h.dags)
    yield GaugeMetricFamily(
        "dagd_dag_files_broken",
        "DAG files that do not load (broken, or refused as a duplicate id).",
        value=h.broken_dag_files,
    )


def _runs(s: _Scrape) -> Iterator[Metric]:
    h, st = s.health, s.stats
    yield _by_dag("dagd_runs_queued", "Runs waiting for a max_active_runs slot.", h.runs_queued)
    yield _by_dag("dagd_runs_running", "Runs admitted and running.", h.runs_running)
    started = CounterMetricFamily(
        "dagd_runs_started", "Runs that began running (a retried run again).", labels=["dag"]
    )
    for dag, n in list(st.runs_started.items()):
        started.add_metric([dag], n)
    yield started
    yield _counter_by("dagd_runs_finished", "Runs that ended, by final status.", st.runs_finished)
    yield _counter_by(
        "dagd_steps_finished",
        "Steps that reached a final status in a try of their run.",
        st.steps_finished,
    )
    yield _histograms(
        "dagd_run_duration_seconds",
        "Seconds from running to finished, of the runs this process saw start.",
        st.run_seconds,
    )
    yield _histograms(
        "dagd_step_duration_seconds",
        "Seconds from a finished step's last attempt start to its end.",
        st.step_seconds,
    )


def _store(s: _Scrape) -> Iterator[Metric]:
    h, st = s.health, s.stats
    yield GaugeMetricFamily(
        "dagd_store_writable",
        "1 while the state file can be written; 0 while writes fail (events are held).",
        value=0 if h.store_error is not None else 1,
    )
    yield GaugeMetricFamily(
        "dagd_event_log_seq",
        "The seq of the newest committed event (what a client's replay cursor counts).",
        value=h.committed_seq,
    )
    yield _histogram(
        "dagd_store_commit_duration_seconds",
        "Seconds one store transaction (a batch of events and records) took.",
        st.commit_seconds,
    )


def _loop(s: _Scrape) -> Iterator[Metric]:
    yield _histogram(
        "dagd_event_loop_lag_seconds",
        "How much later than asked a 0.1 s sleep on the event loop woke up.",
        s.stats.loop_lag_seconds,
    )


def _net(s: _Scrape) -> Iterator[Metric]:
    net = s.net
    if net is None:
        return
    yield GaugeMetricFamily(
        "dagd_websocket_clients", "WebSocket clients connected now.", value=net.connections
    )
    yield GaugeMetricFamily(
        "dagd_websocket_clients_authenticated",
        "WebSocket clients connected and authenticated now.",
        value=net.authenticated_clients,
    )
    yield CounterMetricFamily(
        "dagd_websocket_slow_consumer_closes",
        "WebSocket clients closed with 1013 for letting their send buffer fill.",
        value=net.slow_closed,
    )
    delivered = CounterMetricFamily(
        "dagd_events_delivered",
        "Events written to WebSocket clients (one per client), live or by a replay.",
        labels=["source"],
    )
    delivered.add_metric(["live"], net.events_delivered)
    delivered.add_metric(["replay"], net.events_replayed)
    yield delivered
    yield GaugeMetricFamily(
        "dagd_http_connections", "Plain HTTP connections open now.", value=net.http_connections
    )
    yield CounterMetricFamily(
        "dagd_http_requests", "Plain HTTP requests answered, any status.", value=net.http_requests
    )
    yield GaugeMetricFamily(
        "dagd_handshakes_in_progress",
        "TCP connections whose request head or WebSocket handshake is not finished.",
        value=net.handshaking,
    )
    yield CounterMetricFamily(
        "dagd_connections_refused_busy",
        "Connections closed unread because max_connections handshakes were pending.",
        value=net.busy_refused,
    )


def _pools(s: _Scrape) -> Iterator[Metric]:
    slots = GaugeMetricFamily("dagd_pool_slots", "Slots of each pool of [pools].", labels=["pool"])
    in_use = GaugeMetricFamily(
        "dagd_pool_slots_in_use", "Pool slots held by running attempts.", labels=["pool"]
    )
    waiting = GaugeMetricFamily(
        "dagd_pool_waiting_steps", "Step attempts waiting for a slot of the pool.", labels=["pool"]
    )
    for pool in s.pools:
        slots.add_metric([pool.name], pool.slots)
        in_use.add_metric([pool.name], pool.in_use)
        waiting.add_metric([pool.name], pool.waiting)
    yield from (slots, in_use, waiting)


#: The metric groups of a scrape, in output order. A new group is one more function here.
FAMILIES: tuple[Callable[[_Scrape], Iterable[Metric]], ...] = (
    _daemon,
    _runs,
    _pools,
    _store,
    _loop,
    _net,
)


class DagdCollector:
    """A prometheus_client collector reading dagd at scrape time: the daemon through its
    interface (health and stats), the network counters, dagd's version."""

    def __init__(
        self, daemon: DaemonService, net: NetStats | None = None, version: str = "unknown"
    ) -> None:
        self.daemon = daemon
        self.net = net
        self.version = version

    def collect(self) -> Iterator[Metric]:
        scrape = _Scrape(self.daemon, self.net, self.version)
        for family in FAMILIES:
            yield from family(scrape)


def metrics_registry(
    daemon: DaemonService, net: NetStats | None = None, version: str = "unknown"
) -> CollectorRegistry:
    """A private registry with dagd's collector and the process collector."""
    registry = CollectorRegistry()
    registry.register(DagdCollector(daemon, net, version))
    ProcessCollector(registry=registry)
    return registry


def metrics_handler(
    registry: CollectorRegistry,
    auth: tuple[TokenBook, AuthThrottle] | None = None,
) -> Handler:
    """The handler of GET /metrics: `registry` encoded as the `Accept` header chooses. With
    `auth` (the tokens and the failure throttle) a request needs a valid bearer token of any
    role, else it gets 401 (dagd/net/http/bearer.py).

    The metrics are collected on the event loop (dagd's state is the loop's: read in one go,
    about a tenth of a scrape's CPU) and encoded in a worker thread: encoding costs about
    0.3 ms of CPU per DAG with runs (bench/metrics_scrape.py), so with many DAGs it would
    otherwise hold the loop, and every client, for tens of milliseconds; in the thread it
    gives the loop the GIL back every 5 ms (sys.getswitchinterval).
    """

    async def handle(request: HttpRequest, params: Mapping[str, str]) -> HttpResponse:
        if auth is not None:
            entry = await bearer_entry(*auth, request)
            if isinstance(entry, HttpResponse):
                return entry
        encode, content_type = choose_encoder(request.header("accept") or "")
        collected = _Collected(list(registry.collect()))
        encoder = _fast_openmetrics(content_type) or encode
        body = await trio.to_thread.run_sync(encoder, collected)
        return HttpResponse(200, body, content_type, (("cache-control", "no-store"),))

    return handle


class _Collected:
    """Metric families collected already, as an encoder's registry (its `collect`)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _fast_openmetrics(content_type: str) -> Callable[[Collector], bytes] | None:
    """For an OpenMetrics answer with the `underscores` (the default) or `allow-utf-8`
    escaping, as choose_encoder's `content_type` says: an encoder writing the same bytes with
    less CPU; else None (choose_encoder's own encoder is used).

    Every metric and label name dagd exposes is a legacy Prometheus name
    ([a-zA-Z_:][a-zA-Z0-9_:]*, a test holds them to it), which those two escapings write
    unchanged; but prometheus_client 0.26 escapes each sample's name character by character
    for `underscores`, and with three str.replace for `allow-utf-8`: 40% less CPU per
    OpenMetrics scrape (bench/metrics_scrape.py). `dots` and `values` do change names
    (`dagd_x` becomes `dagd__x`): those keep prometheus_client's way.
    """
    media, *params = (part.strip() for part in content_type.split(";"))
    if media != OPENMETRICS:
        return None
    found = dict(param.partition("=")[::2] for param in params)
    if found.get("escaping", UNDERSCORES) not in (UNDERSCORES, ALLOWUTF8):
        return None
    version = found.get("version") or "1.0.0"
    return lambda registry: openmetrics_latest(registry, escaping=ALLOWUTF8, version=version)


def routes(ctx: HttpContext) -> list[Route]:
    """GET /metrics on a registry of its own, asking for a token if config says so."""
    registry = metrics_registry(ctx.daemon, ctx.net, ctx.version)
    auth = (ctx.tokens, ctx.throttle) if ctx.config.server.metrics_auth else None
    return [Route(frozenset({"GET"}), PATH, metrics_handler(registry, auth))]


# ---------------------------------------------------------------- families from plain values

_LE: dict[tuple[float, ...], list[str]] = {}  # bucket bounds -> their `le` label texts


def _le(bounds: tuple[float, ...]) -> list[str]:
    """The `le` label of each bucket: "0.1", "60.0", ..., "+Inf" (a float's shortest text,
    as prometheus_client writes its own buckets; OpenMetrics wants floats there)."""
    found = _LE.get(bounds)
    if found is None:
        found = _LE[bounds] = [repr(float(b)) for b in bounds] + ["+Inf"]
    return found


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    return [(le, n) for le, (_, n) in zip(_le(hist.bounds), hist.cumulative(), strict=True)]


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, doc, buckets=_buckets(hist), sum_value=hist.sum, unit="seconds"
    )


#: A status enum (RunStatus, StepStatus): a str whose text is the wire's.
Status = TypeVar("Status", bound=str)


def _histograms(
    name: str, doc: str, table: Mapping[tuple[str, Status], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["dag", "status"], unit="seconds")
    for (dag, status), hist in list(table.items()):
        family.add_metric([dag, str(status)], _buckets(hist), hist.sum)
    return family


def _counter_by(
    name: str, doc: str, table: Mapping[tuple[str, Status], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["dag", "status"])
    for (dag, status), n in list(table.items()):
        family.add_metric([dag, str(status)], n)
    return family


def _by_dag(name: str, doc: str, table: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["dag"])
    for dag, n in sorted(table.items()):
        family.add_metric([dag], n)
    return family


__all__ = [
    "FAMILIES",
    "PATH",
    "DagdCollector",
    "metrics_handler",
    "metrics_registry",
    "routes",
]
