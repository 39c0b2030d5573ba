"""Settings shared by every test. Helpers (and the test step callables, `stepfuncs:<name>`)
live in tests/support/, which pytest's `pythonpath` setting puts on sys.path."""

from __future__ import annotations

# Hypothesis: no per-example deadline (these machines are shared and noisy: a slow example is
# not a bug), and in CI a fixed sequence of examples, so a run is reproducible; developers' runs
# keep exploring new examples.
import os

from hypothesis import settings

settings.register_profile("dagd", deadline=None)
settings.register_profile("dagd-ci", deadline=None, derandomize=True)
settings.load_profile("dagd-ci" if os.environ.get("CI") else "dagd")
