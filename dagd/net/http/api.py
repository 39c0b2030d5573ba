"""The JSON API under `/api/v1/`: DAGs, runs and step logs over plain HTTP.

Every route asks the daemon through `DaemonService` (dagd/daemon/api.py), exactly what the
WebSocket's requests ask, and answers with the protocol's own classes unstructured by its one
converter (dagd/core/protocol/converter.py) minus the WebSocket envelope (`type`,
`requestId`): a run read with `GET /api/v1/runs/{run_id}` is the `run` answer of `get_run`,
field for field. docs/openapi.yaml describes every route; tests/net/http/test_api_docs.py
holds the document and `ROUTES` together.

Auth: `Authorization: Bearer <token>`, checked with the WebSocket's `TokenBook` and
`AuthThrottle` (the same tokens, roles and failure throttle). Without a valid token: 401 with
`WWW-Authenticate: Bearer`; a `read` token asking to change something: 403. Errors are
`{"code", "message"}` with the protocol's codes; `STATUS` maps each code to its HTTP status.
Bodies and query strings are read strictly (dagd/core/protocol/wire.py): hostile input is a
400, never a crash.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dagd.core.logslice import MAX_LOG_READ
from dagd.core.protocol import answers, requests
from dagd.core.protocol.codec import parse_client_message, to_wire
from dagd.core.protocol.codes import ErrorCode, ProtocolError, Role
from dagd.core.protocol.requests import MAX_LIST_LIMIT
from dagd.core.protocol.wire import dumps, loads_strict
from dagd.daemon.api import DaemonError, DaemonService
from dagd.net.auth import AuthThrottle, TokenBook
from dagd.net.http.bearer import NO_STORE, bearer_entry
from dagd.net.http.context import HttpContext
from dagd.net.http.message import (
    Handler,
    HttpRequest,
    HttpResponse,
    Route,
    error_response,
    json_response,
)

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

#: The HTTP status of each error code the JSON API answers with (one table, every code the
#: daemon's methods raise included; docs/openapi.yaml lists them per route). A DaemonError
#: with a code missing here would be a 500; tests/net/http/test_api_handlers.py fails first.
STATUS: dict[str, int] = {
    # the request itself
    ErrorCode.INVALID_MESSAGE: 400,  # malformed JSON, wrong types, bad query values
    ErrorCode.AUTH_REQUIRED: 401,  # no `Authorization: Bearer ...` (dagd/net/http/bearer.py)
    ErrorCode.AUTH_FAILED: 401,  # a token no entry of the TokenBook matches
    ErrorCode.FORBIDDEN: 403,  # a `read` token asking to trigger, cancel, retry, ...
    # what it names
    ErrorCode.UNKNOWN_DAG: 404,
    ErrorCode.UNKNOWN_RUN: 404,
    ErrorCode.UNKNOWN_STEP: 404,  # a step log of a step the run does not have
    ErrorCode.UNKNOWN_ATTEMPT: 404,  # ... or of an attempt it has not made
    ErrorCode.INVALID_PARAMS: 422,  # well-formed, but not the DAG's params
    ErrorCode.INVALID_RANGE: 422,  # well-formed, but not a usable backfill range
    # the state it finds
    ErrorCode.NOT_RUNNING: 409,
    ErrorCode.NOT_FINISHED: 409,
    ErrorCode.NOT_RETRYABLE: 409,
    ErrorCode.DUPLICATE_RUN: 409,
    ErrorCode.NO_SCHEDULE: 409,
    # the daemon's own state: try again later
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    "slow_consumer": 503,  # a subscriber's code; no route subscribes, mapped all the same
    # the daemon's own failure, not the request's: a step log it cannot read (EACCES, EIO)
    ErrorCode.LOG_UNREADABLE: 500,
}

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: int() also reads "٣" and " 3 "
#: Most bytes one log request returns (1 MiB): read from the daemon in MAX_LOG_READ pieces.
MAX_LOG_LENGTH = 1024 * 1024
#: A log offset beyond any file (2**53: what a JSON number holds exactly, for scripts).
MAX_LOG_OFFSET = 2**53
#: Run list answers kept for reuse (about 4 KB each at the default limit of 20), and the
#: largest kept (a longer one is answered, not kept): 64 x 64 KiB = 4 MiB at most.
MAX_RUN_LISTS = 64
MAX_RUN_LIST_BYTES = 64 * 1024
#: The `stream` query values and the daemon's names of an attempt's two logs.
_STREAMS = {"stdout": "out", "stderr": "err"}

Params = Mapping[str, str]
_Inner = Callable[[HttpRequest, Params], Awaitable[HttpResponse]]


class ApiError(Exception):
    """A request the API refuses: `code` (an `ErrorCode` value, the body's `code`), its
    message, and further response headers."""

    def __init__(self, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers


def _error(exc: ApiError | DaemonError | ProtocolError) -> HttpResponse:
    code = str(exc.code)
    status = STATUS.get(code)
    if status is None:  # a code nobody mapped: say so in the log, not to the client
        log.error("JSON API: no HTTP status for error code %r (%s)", code, exc.message)
        return error_response(500, "internal", "the daemon could not answer", (NO_STORE,))
    extra = exc.headers if isinstance(exc, ApiError) else ()
    return error_response(status, code, exc.message, (NO_STORE, *extra))


def _answer(status: int, message: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    """An answer class as its wire object without the WebSocket envelope."""
    body = to_wire(message)
    del body["type"]  # `requestId` is absent: these answers are built without one
    return json_response(status, body, (NO_STORE, *headers))


def _query(request: HttpRequest, known: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each given at most once and each one of `known`."""
    found: dict[str, str] = {}
    for name, values in request.query.items():
        if name not in known:
            allowed = ", ".join(known) if known else "none"
            raise ApiError(
                ErrorCode.INVALID_MESSAGE,
                f"unknown query parameter {name[:40]!r} (known: {allowed})",
            )
        if len(values) != 1:
            raise ApiError(ErrorCode.INVALID_MESSAGE, f"query parameter {name!r} given twice")
        found[name] = values[0]
    return found


def _count(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """Query parameter `name` as an integer in [low, high] (ASCII digits only)."""
    text = query.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise ApiError(ErrorCode.INVALID_MESSAGE, f"{name} must be an integer from {low} to {high}")
    return int(text)


def _body(request: HttpRequest, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request body as a JSON object whose keys are all `allowed`; an empty body is {}.
    Read strictly: NaN, overflowing numbers, lone surrogates and deep nesting are refused."""
    if not request.body.strip():
        return {}
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            ErrorCode.INVALID_MESSAGE, f"the body is not UTF-8 (byte {exc.start})"
        ) from None
    try:
        value = loads_strict(text)
    except ValueError as exc:  # loads_strict's messages, and int()'s digit limit
        raise ApiError(ErrorCode.INVALID_MESSAGE, str(exc)[:200]) from None
    if type(value) is not dict:
        raise ApiError(ErrorCode.INVALID_MESSAGE, "the body must be a JSON object")
    extra = sorted(set(value) - set(allowed))
    if extra:
        known = ", ".join(allowed) if allowed else "none"
        raise ApiError(
            ErrorCode.INVALID_MESSAGE, f"unknown field {extra[0][:40]!r} (fields: {known})"
        )
    return value


def _request(kind: str, fields: dict[str, Any]) -> requests.Request:
    """A protocol request built from path and body fields and read exactly as the WebSocket
    reads it (the same types, limits and messages)."""
    return parse_client_message(dumps({"type": kind, **fields}))


def routes(ctx: HttpContext) -> list[Route]:
    """The JSON API's part of the route table (dagd/net/http/routes.py)."""
    return JsonApi(ctx.daemon, ctx.tokens, ctx.throttle).routes()


def openapi_document() -> bytes | None:
    """docs/openapi.yaml as installed with the package (dagd/net/http/openapi.yaml, a link
    to it in the source tree), or None if this installation lacks it."""
    try:
        return (importlib.resources.files(__package__) / "openapi.yaml").read_bytes()
    except OSError:
        return None


def _serve(document: bytes) -> Handler:
    """The OpenAPI document's route: read once at start, no token (it describes the API,
    it holds nothing of the daemon's), `application/yaml` (RFC 9512)."""
    response = HttpResponse(200, document, "application/yaml", (("cache-control", "no-cache"),))

    async def openapi(request: HttpRequest, params: Params) -> HttpResponse:
        if request.query:
            return error_response(400, ErrorCode.INVALID_MESSAGE, "no query parameters here")
        return response

    return openapi


def _location(run_id: str) -> tuple[str, str]:
    # ":" and "+" may stand in a path segment (RFC 3986 pchar): run ids stay readable.
    return ("location", f"{PREFIX}/runs/{urllib.parse.quote(run_id, safe=':+')}")


class JsonApi:
    """The JSON API's handlers over one daemon, its tokens and the auth throttle.

    `routes()` is its part of the route table. Each handler answers 401/403 before it reads
    anything else, so an unauthenticated client learns nothing of DAG or run ids.
    """

    def __init__(
        self, daemon: DaemonService, tokens: TokenBook, throttle: AuthThrottle | None = None
    ) -> None:
        self.daemon = daemon
        self.tokens = tokens
        self.throttle = throttle if throttle is not None else AuthThrottle()
        # GET /api/v1/runs answers by (dag, limit), with the runs_version they were read at.
        self._run_lists: dict[tuple[str | None, int], tuple[object, HttpResponse]] = {}

    def routes(self) -> list[Route]:
        """The route table of the JSON API (docs/openapi.yaml documents exactly these)."""
        # (method, path under PREFIX, the action an `operate` token may do (None: reading),
        # handler)
        table: list[tuple[str, str, str | None, _Inner]] = [
            ("GET", "/dags", None, self.list_dags),
            ("GET", "/dags/{dag_id}", None, self.get_dag),
            ("POST", "/dags/{dag_id}/runs", "trigger", self.trigger),
            ("POST", "/dags/{dag_id}/pause", "pause", self.pause),
            ("POST", "/dags/{dag_id}/unpause", "unpause", self.unpause),
            ("POST", "/dags/{dag_id}/backfill", "backfill", self.backfill),
            ("GET", "/runs", None, self.list_runs),
            ("GET", "/runs/{run_id}", None, self.get_run),
            ("POST", "/runs/{run_id}/cancel", "cancel", self.cancel),
            ("POST", "/runs/{run_id}/retry", "retry", self.retry),
            ("GET", "/runs/{run_id}/steps/{step_id}/log", None, self.read_log),
        ]
        found = [
            Route(frozenset({method}), PREFIX + path, self._guarded(action, handler))
            for method, path, action, handler in table
        ]
        document = openapi_document()
        if document is not None:
            found.append(Route(frozenset({"GET"}), f"{PREFIX}/openapi.yaml", _serve(document)))
        return found

    def _guarded(self, action: str | None, handler: _Inner) -> Handler:
        async def guarded(request: HttpRequest, params: Params) -> HttpResponse:
            try:
                entry = await bearer_entry(self.tokens, self.throttle, request)
                if isinstance(entry, HttpResponse):
                    return entry
                if action is not None and entry.role != Role.OPERATE:
                    raise ApiError(
                        ErrorCode.FORBIDDEN,
                        f"this token's role is {entry.role!r}: it cannot {action}",
                    )
                return await handler(request, params)
            except (ApiError, DaemonError, ProtocolError) as exc:
                return _error(exc)

        return guarded

    # ---- DAGs

    async def list_dags(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        return _answer(200, answers.DagList(self.daemon.list_dags(), self.daemon.broken_files()))

    async def get_dag(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        return _answer(200, self.daemon.dag_detail(params["dag_id"]))

    async def trigger(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        body = _body(request, ("params",))
        message = _request("trigger", {"dagId": params["dag_id"], **body})
        assert isinstance(message, requests.Trigger)
        run_id = await self.daemon.trigger(message.dag_id, message.params)
        return _answer(201, answers.Triggered(message.dag_id, run_id), (_location(run_id),))

    async def pause(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        _body(request, ())
        await self.daemon.pause(params["dag_id"])
        return _answer(200, answers.Paused(params["dag_id"]))

    async def unpause(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        _body(request, ())
        next_run = await self.daemon.unpause(params["dag_id"])
        return _answer(200, answers.Unpaused(params["dag_id"], next_run))

    async def backfill(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        body = _body(request, ("start", "end", "params", "rerun", "dryRun"))
        message = _request("backfill", {"dagId": params["dag_id"], **body})
        assert isinstance(message, requests.Backfill)
        result = await self.daemon.backfill(
            message.dag_id,
            message.start,
            message.end,
            message.params,
            rerun=message.rerun,
            dry_run=message.dry_run,
        )
        return _answer(200 if message.dry_run else 202, result)

    # ---- runs

    async def list_runs(self, request: HttpRequest, params: Params) -> HttpResponse:
        """One store read and one encoding, and none while the stored runs have not changed
        since the same question was last answered (`DaemonService.runs_version`): a page
        or a script polling an idle daemon costs a dictionary lookup."""
        query = _query(request, ("dag", "limit"))
        limit = _count(query, "limit", 20, 1, MAX_LIST_LIMIT)
        key = (query.get("dag"), limit)
        version = self.daemon.runs_version  # before the read: a change during it is seen
        cached = self._run_lists.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        response = _answer(200, answers.RunList(await self.daemon.list_runs(key[0], limit)))
        if len(response.body) <= MAX_RUN_LIST_BYTES:
            if len(self._run_lists) >= MAX_RUN_LISTS:
                self._run_lists.clear()  # bounded memory whatever the queries
            self._run_lists[key] = (version, response)
        return response

    async def get_run(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        return _answer(200, await self.daemon.run_detail(params["run_id"]))

    async def cancel(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        _body(request, ())
        await self.daemon.cancel(params["run_id"])
        return _answer(202, answers.CancelAccepted(params["run_id"]))

    async def retry(self, request: HttpRequest, params: Params) -> HttpResponse:
        _query(request, ())
        _body(request, ())
        run_id = await self.daemon.retry(params["run_id"])
        return _answer(202, answers.RetryAccepted(run_id), (_location(run_id),))

    async def read_log(self, request: HttpRequest, params: Params) -> HttpResponse:
        """Bytes `offset` .. `offset + length` of one attempt's stdout or stderr, raw, with the
        `Dagd-Log-*` headers that say where the next read starts and whether it will ever
        find more (docs/openapi.yaml, docs/http.md)."""
        query = _query(request, ("attempt", "stream", "offset", "length"))
        attempt = _count(query, "attempt", 0, 1, 1_000_000) or None
        stream = _STREAMS.get(query.get("stream", "stdout"))
        if stream is None:
            raise ApiError(ErrorCode.INVALID_MESSAGE, "stream must be stdout or stderr")
        offset = _count(query, "offset", 0, 0, MAX_LOG_OFFSET)
        length = _count(query, "length", MAX_LOG_LENGTH, 1, MAX_LOG_LENGTH)
        run_id, step_id = params["run_id"], params["step_id"]
        pieces: list[bytes] = []
        while True:  # the first read settles the attempt (a retry may start meanwhile)
            piece = await self.daemon.read_log(
                run_id, step_id, attempt, stream, offset, min(length, MAX_LOG_READ)
            )
            attempt = piece.attempt
            pieces.append(piece.data)
            offset, length = piece.next_offset, length - len(piece.data)
            if not length or len(piece.data) < MAX_LOG_READ or offset >= piece.size:
                break
        headers = (
            NO_STORE,
            ("dagd-log-attempt", str(piece.attempt)),
            ("dagd-log-stream", "stdout" if piece.stream == "out" else "stderr"),
            ("dagd-log-size", str(piece.size)),
            ("dagd-log-next-offset", str(piece.next_offset)),
            ("dagd-log-final", "true" if piece.final else "false"),
        )
        return HttpResponse(200, b"".join(pieces), "application/octet-stream", headers)
