"""Where shell steps write their outputs: one folder per user, one file name per attempt.

The folder is `<tmp>/dagd-outputs-<uid>`, mode 0700, made on first use and kept: a fixed name,
so a dagd that was killed (or a Dask worker) leaves no folder behind. A fixed name under /tmp
could be made first by someone else, so it is used only if it is a real folder (not a link)
owned by this user that no one else may enter; otherwise this process takes a folder of its
own (`tempfile.mkdtemp`, removed with its executor or at exit). Files are named
`<pid>-<n>`: unique among the processes sharing the folder (a daemon, `dagd run`, Dask
workers); the first name a process takes removes the files of processes that are gone (an
attempt's file is removed when it ends, so only a killed process leaves one).

A file is named, not made: a step that writes no outputs leaves nothing to create or remove
(creating a file costs as much as a spawn on some disks: shellthread.py), and the attempt's
thread reads and removes it once the step ended (dagd/runtime/local/shellthread.py).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
import tempfile
import weakref

from dagd.core.outputs import (
    MAX_OUTPUT_BYTES,
    OutputError,
    output_file_too_large,
    parse_output_file,
)


def shared_folder() -> str | None:
    """`<tmp>/dagd-outputs-<uid>`, made (mode 0700) if it is not there; None if what is there
    is not a folder of this user's that only it may enter. Raises OSError if it cannot be
    made or examined."""
    uid = os.getuid()
    path = os.path.join(tempfile.gettempdir(), f"dagd-outputs-{uid}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        return None
    return path


def remove_orphans(folder: str) -> None:
    """Remove the files in `folder` of processes that no longer exist (`<pid>-<n>`)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            pid, dash, _ = name.partition("-")
            if not dash or not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
            except OSError:
                pass  # alive, someone else's


class OutputFiles:
    """Names of output files, unique among the processes that share the folder."""

    def __init__(self) -> None:
        self._folder: str | None = None
        self._numbers = itertools.count(1)

    def next_path(self) -> str:
        """A path no attempt was given before, in the folder (made now if needed). Raises
        OSError if no folder can be made."""
        folder = self._folder
        if folder is None:
            folder = shared_folder()
            if folder is None:  # someone else's name: a folder of this process's own
                folder = tempfile.mkdtemp(prefix="dagd-outputs-")
                weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
            remove_orphans(folder)
            self._folder = folder
        return os.path.join(folder, f"{os.getpid()}-{next(self._numbers)}")


def take_outputs(path: str) -> tuple[dict[str, str] | None, str | None]:
    """Read a step's output file, if it wrote one, and remove it: (outputs, None), (None,
    why they cannot be taken), or (None, None) when there is no file. Blocking (a worker
    thread's); call it once nothing writes to the file any more (the step's process group is
    gone). A symbolic link is not followed, and anything but a regular file (a fifo, whose
    open or read would block this thread for ever, a device, a folder) is refused and
    removed."""
    try:
        # O_NONBLOCK: opening a fifo with no writer returns at once instead of blocking.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, None  # the usual case: the step gave no outputs
    except OSError as exc:
        return None, f"cannot read the output file: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "$DAGD_OUTPUT is not a regular file"
        size = info.st_size
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
