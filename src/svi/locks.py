"""One writer per output: an exclusive advisory lock held for a whole run.

A generation holds ``OUT.mp4.lock`` and a training run ``RUN/.lock`` from before it
touches any file until it ends. The lock is ``fcntl.flock`` on that file, which also
holds the owner's PID and command, so a second writer fails at once with one line
naming the holder::

    error: out.mp4 is being written by process 1234 (svi generate --out out.mp4 ...)

The kernel drops a flock when its process dies (even on ``kill -9``), so a lock file
left by a dead process does not block: the next run simply takes it over. A run that
ends removes its lock file. Locks are re-entrant within one thread (the CLI and the
library may both take the lock of one output); another thread of the same process is
refused like another process.

POSIX only (``fcntl``); importing this module works everywhere, taking a lock on a
platform without ``fcntl`` raises :class:`SviError`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from svi.errors import SviError, one_line

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def lock_path_for(out: Path) -> Path:
    """The lock file of an output file: ``OUT.mp4`` -> ``OUT.mp4.lock``."""
    return out.with_name(out.name + ".lock")


@dataclass
class _Held:
    fd: int
    thread: int
    depth: int = 1


_held: dict[str, _Held] = {}
_guard = threading.Lock()


@contextmanager
def exclusive(lock_file: Path, what: Path | str, command: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock ``lock_file`` (guarding ``what``) for the ``with`` block.

    Raises SviError, before touching anything else, if another process (or thread)
    holds it. The lock file is removed when the block ends.
    """
    key = os.path.join(os.path.realpath(lock_file.parent), lock_file.name)
    me = threading.get_ident()
    with _guard:
        held = _held.get(key)
        if held is not None and held.thread == me:
            held.depth += 1
        elif held is not None:
            raise SviError(f"{what} is being written by another thread of this process")
        else:
            _held[key] = _Held(_acquire(lock_file, what, command or _command()), me)
    try:
        yield lock_file
    finally:
        with _guard:
            held = _held[key]
            held.depth -= 1
            if held.depth == 0:
                del _held[key]
                _release(lock_file, held.fd)


def _acquire(path: Path, what: Path | str, command: str) -> int:
    if fcntl is None:  # pragma: no cover - Windows
        raise SviError("output locks need fcntl (Linux, macOS); this platform has none")
    for _ in range(100):  # retried only while other runs remove their lock files
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise SviError(f"folder {path.parent} does not exist") from None
        except IsADirectoryError:
            raise SviError(f"cannot lock {what}: {path} is a directory") from None
        except OSError as exc:
            raise SviError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SviError(f"{what} is being written by {_holder(path)}") from None
        except OSError as exc:
            os.close(fd)
            raise SviError(f"cannot lock {path}: {exc.strerror}") from None
        if _still_linked(fd, path):  # not a file its last owner removed meanwhile
            break
        os.close(fd)
    else:  # pragma: no cover - only under a storm of competing runs
        raise SviError(f"cannot lock {path}: other runs keep replacing it")
    record = json.dumps({"pid": os.getpid(), "command": command}) + "\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
    except OSError as exc:
        _release(path, fd)
        raise SviError(f"cannot write the lock file {path}: {exc.strerror}") from None
    return fd


def _still_linked(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _release(path: Path, fd: int) -> None:
    """Remove the lock file, then drop the lock (so no one locks a removed file unseen)."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    """``process PID (command)`` of the lock's owner, as it wrote it into the file."""
    deadline = time.monotonic() + 1.0
    while True:  # the owner writes its record right after locking: wait a moment for it
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return f"process {int(record['pid'])} ({one_line(record['command'])})"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "another process"
            time.sleep(0.02)


def _command() -> str:
    """This process's command line, as a user would type it (at most 200 characters)."""
    argv = sys.argv or ["python"]
    name = Path(argv[0]).name
    words = ["svi", *argv[1:]] if name in ("svi", "cli.py") else [name, *argv[1:]]
    text = one_line(shlex.join(words))
    return text if len(text) <= 200 else text[:197] + "..."
