"""Exception groups at API edges: a nursery wraps even a single error in an ExceptionGroup; a
caller of a context manager deserves the error itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise a group holding exactly one (non-group) exception as that exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        inner = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group or isinstance(inner, BaseExceptionGroup):
            raise
        raise inner from group
