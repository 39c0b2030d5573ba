"""Settings shared by every test. Helpers (and the test step callables, `stepfuncs:<name>`)
live in tests/support/, which pytest's `pythonpath` setting puts on sys.path."""

from __future__ import annotations

# Hypothesis: no per-example deadline (these machines are shared and noisy: a slow example is
# not a bug), and in CI a fixed sequence of examples, so a run is reproducible; developers' runs
# keep exploring new examples.
import os
from pathlib import Path

import pytest
from hypothesis import settings

TESTS = Path(__file__).parent

settings.register_profile("dagd", deadline=None)
settings.register_profile("dagd-ci", deadline=None, derandomize=True)
settings.load_profile("dagd-ci" if os.environ.get("CI") else "dagd")


# Under pytest-xdist (`-n 2 --dist loadgroup`, the README's command) the tests of a folder that
# shares an expensive session fixture run on one worker, so the fixture starts once, not once
# per worker: the Dask LocalCluster (tests/runtime/dask, ~2 s and two worker processes) and the
# headless Chromium (tests/dashboard). Without xdist the mark is inert.
_GROUPS = {"dask": ("runtime", "dask"), "browser": ("dashboard",)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(TESTS).parts
        for group, folder in _GROUPS.items():
            if parts[: len(folder)] == folder:
                item.add_marker(pytest.mark.xdist_group(group))
