"""Fixtures of the network tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from wshelp import Aio


@pytest.fixture
def aio() -> Iterator[Aio]:
    """The asyncio `websockets` client's event loop, in a thread of its own."""
    loop = Aio()
    yield loop
    loop.close()
