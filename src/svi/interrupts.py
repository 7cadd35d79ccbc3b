"""SIGINT and SIGTERM as an exception that long runs turn into a clean, resumable stop.

Shells, ``timeout``, systemd, Docker and job schedulers stop a program with SIGTERM;
a user with Ctrl-C (SIGINT). Inside :func:`raising` both raise :class:`Interrupted`
(a ``BaseException``, so ``except Exception`` does not swallow it) and every further
signal is ignored: the run finalises its files undisturbed by a second Ctrl-C. The
CLI reports it as one ``error: interrupted (SIGTERM): ...`` line and exits
``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as shells expect.

:func:`deferred` holds signals during a step that must not be cut in half (a clip's
bookkeeping, an optimizer step); the caller stops at the next safe point.

Handlers can only be installed in the main thread; elsewhere these are no-ops.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was stopped by ``signum``; ``str(exc)`` says what was kept."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = int(signum)
        super().__init__(message or f"interrupted ({self.signal_name})")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """What a shell reports for a program killed by this signal: 128 + number."""
        return 128 + self.signum

    def with_message(self, message: str) -> Interrupted:
        """The same interruption, reported as ``interrupted (SIGNAL): message``."""
        return Interrupted(self.signum, f"interrupted ({self.signal_name}): {message}")


def ignore_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on (while a stop is being finalised)."""
    if _main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def _raise(signum: int, frame: Any) -> None:
    ignore_signals()  # one stop at a time: a second Ctrl-C must not cut the finalising
    raise Interrupted(signum)


class Pending:
    """The first signal received inside :func:`deferred` (``signum`` None: none yet)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def record(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def raise_if_any(self) -> None:
        """Stop here if a signal came: raise :class:`Interrupted` (ignoring further ones)."""
        if self.signum is not None:
            ignore_signals()
            raise Interrupted(self.signum)


@contextmanager
def raising() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block."""
    with _handlers(_raise):
        yield


@contextmanager
def deferred() -> Iterator[Pending]:
    """Signals inside the block are recorded, not acted on; check ``pending`` after."""
    pending = Pending()
    with _handlers(pending.record):
        yield pending


@contextmanager
def ignored() -> Iterator[None]:
    """SIGINT and SIGTERM are ignored inside the block."""
    with _handlers(signal.SIG_IGN):
        yield


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handlers(handler: Callable | int) -> Iterator[None]:
    if not _main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            stopping = handler is not signal.SIG_IGN and signal.getsignal(signum) is signal.SIG_IGN
            if stopping and _arms_a_stop(old):
                # a stop began in this block, nested in another one of ours: re-arming
                # that block's handler would let a second signal cut the finalising (the
                # stop goes on until the outermost block ends and restores the caller's)
                continue
            signal.signal(signum, signal.SIG_DFL if old is None else old)


def _arms_a_stop(handler: Any) -> bool:
    """Is ``handler`` one of this module's (a :func:`raising` or :func:`deferred` block)?"""
    return handler is _raise or isinstance(getattr(handler, "__self__", None), Pending)
