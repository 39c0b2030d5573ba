"""Error answers as the server sends them: a protocol `Error` stamped with the current time.

The classes, their wire names and their JSON live in `dagd.core.protocol`; the daemon's
queries already answer with the protocol's values (`DagSummary`, `RunRecord`).
"""

from __future__ import annotations

import time

from dagd.core.protocol.answers import Error
from dagd.core.protocol.codes import ErrorCode


def error(code: ErrorCode | str, message: str, *, oldest_seq: int | None = None) -> Error:
    """An `error` answer with `code` (an `ErrorCode`, or its value as a daemon error carries
    it), a human `message` and the current time; `oldest_seq` for `replay_unavailable` only.

    Raises ValueError for a code that is not an ErrorCode value.
    """
    return Error(ErrorCode(code), message, time.time(), oldest_seq=oldest_seq)
