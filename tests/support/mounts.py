"""Real filesystems for the state folder tests: a small tmpfs mounted for one test."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(folder: Path, options: str, refused: str = "cannot mount a tmpfs here") -> Iterator[Path]:
    """A tmpfs mounted on `folder` (made if needed) with `mount -o options`, lazily unmounted
    at the end. Mounting needs root (CI runs these as root): where `mount` refuses, the test
    is skipped with `refused` and mount's own message."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"{refused}: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(folder)], check=False)
