"""Where local shell steps write their outputs: one private folder per executor, one file name
per attempt in it.

The folder is made on first use (`tempfile.mkdtemp`: mode 0700, a name no other user can
guess or take over, unlike a fixed name under /tmp) and removed with its executor or at exit.
A Dask worker names its steps' files the same way (dagd/runtime/dask/worker.py).
A file is named, not made: a step that writes no outputs leaves nothing to create or remove
(creating a file costs as much as a spawn on some disks: shellthread.py), and the attempt's
thread reads and removes it once the step ended (dagd/runtime/local/shellthread.py).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import weakref

from dagd.core.outputs import (
    MAX_OUTPUT_BYTES,
    OutputError,
    output_file_too_large,
    parse_output_file,
)


class OutputFiles:
    """Names of output files, unique within this process."""

    def __init__(self) -> None:
        self._folder: str | None = None
        self._numbers = itertools.count(1)

    def next_path(self) -> str:
        """A path no attempt of this executor was given before, in its private folder (made
        now if needed). Raises OSError if the folder cannot be made."""
        folder = self._folder
        if folder is None:
            folder = self._folder = tempfile.mkdtemp(prefix="dagd-outputs-")
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        return os.path.join(folder, str(next(self._numbers)))


def take_outputs(path: str) -> tuple[dict[str, str] | None, str | None]:
    """Read a step's output file, if it wrote one, and remove it: (outputs, None), (None,
    why they cannot be taken), or (None, None) when there is no file. Blocking (a worker
    thread's); call it once nothing writes to the file any more (the step's process group is
    gone). A symbolic link is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, None  # the usual case: the step gave no outputs
    except OSError as exc:
        return None, f"cannot read the output file: {exc.strerror or exc}"
    try:
        size = os.fstat(fd).st_size
        if size > MAX_OUTPUT_BYTES:
            return None, str(output_file_too_large(size))
        data = b""
        while chunk := os.read(fd, MAX_OUTPUT_BYTES + 1 - len(data)):
            data += chunk
            if len(data) > MAX_OUTPUT_BYTES:
                break
        return parse_output_file(data), None
    except OutputError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read the output file: {exc.strerror or exc}"
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
