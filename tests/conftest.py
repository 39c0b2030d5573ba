"""Makes the test step callables importable as `stepfuncs:<name>` however pytest is started."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# Hypothesis: no per-example deadline (these machines are shared and noisy: a slow example is
# not a bug), and in CI a fixed sequence of examples, so a run is reproducible; developers' runs
# keep exploring new examples.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("dagd", deadline=None)
settings.register_profile("dagd-ci", deadline=None, derandomize=True)
settings.load_profile("dagd-ci" if os.environ.get("CI") else "dagd")
