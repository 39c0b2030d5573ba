"""Which answer answers which request, and the one function that puts a `requestId` on it.

Modelled on lsprotocol's request/response table: the server looks up what it owes a request,
and the client library what it waits for. Any request may instead get an `Error` (with the
request's `requestId`); a `subscribe` with `since` is answered `subscribed`, then replays and
ends with `replay_complete` carrying the same `requestId`.
"""

from __future__ import annotations

from typing import TypeVar

import attrs

from dagd.core.protocol.answers import (
    Answer,
    AuthSuccess,
    BackfillResult,
    CancelAccepted,
    DagDetail,
    DagList,
    Error,
    LogFollowing,
    LogUnfollowed,
    Paused,
    Pong,
    PoolList,
    ReplayComplete,
    RetryAccepted,
    RunDetail,
    RunList,
    SnapshotComplete,
    Subscribed,
    Triggered,
    Unpaused,
    Unsubscribed,
)
from dagd.core.protocol.requests import (
    Auth,
    Backfill,
    Cancel,
    FollowLog,
    GetDag,
    GetRun,
    ListDags,
    ListPools,
    ListRuns,
    Pause,
    Ping,
    Replay,
    Request,
    RequestId,
    Retry,
    Snapshot,
    Subscribe,
    Trigger,
    UnfollowLog,
    Unpause,
    Unsubscribe,
)

#: request class -> the class of its (successful) answer.
ANSWER_TO: dict[type[Request], type[Answer]] = {
    Auth: AuthSuccess,
    Subscribe: Subscribed,
    Unsubscribe: Unsubscribed,
    Replay: ReplayComplete,
    Snapshot: SnapshotComplete,
    Trigger: Triggered,
    Cancel: CancelAccepted,
    Retry: RetryAccepted,
    ListDags: DagList,
    ListPools: PoolList,
    ListRuns: RunList,
    GetRun: RunDetail,
    GetDag: DagDetail,
    Pause: Paused,
    Unpause: Unpaused,
    Backfill: BackfillResult,
    FollowLog: LogFollowing,
    UnfollowLog: LogUnfollowed,
    Ping: Pong,
}

A = TypeVar("A", bound=Answer)


def with_request_id(answer: A, request_id: RequestId) -> A:
    """`answer` (any answer or error) carrying `request_id` (None: no `requestId` on the wire).

    The one place a `requestId` is put on an answer: the server passes the id of the request
    it answers, as parsed (`Request.request_id`, or `ProtocolError.request_id` when the request
    itself could not be parsed).
    """
    if request_id is None and answer.request_id is None:
        return answer
    return attrs.evolve(answer, request_id=request_id)


def answer_to(request: Request, answer: A) -> A:
    """`answer` as the answer to `request`: with the request's `requestId`, after checking
    that ANSWER_TO pairs them (an `Error` may answer any request).

    Raises TypeError when `answer` is not what `request` is answered with: a bug in the
    server, never the peer's doing.
    """
    expected = ANSWER_TO[type(request)]
    if not isinstance(answer, expected | Error):
        raise TypeError(
            f"{type(request).__name__} is answered by {expected.__name__}, "
            f"not {type(answer).__name__}"
        )
    return with_request_id(answer, request.request_id)
