"""Output locks (one writer per output) and signals as a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from svi import interrupts, locks
from svi.errors import SviError, one_line
from svi.interrupts import Interrupted

HOLD = """
import sys, time
from pathlib import Path
from svi import locks
with locks.exclusive(Path(sys.argv[1]), "the output", command="svi generate --seed 1"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    lock = tmp_path / "out.mp4.lock"
    proc = _holder(lock)
    try:
        with pytest.raises(SviError) as info, locks.exclusive(lock, "out.mp4"):
            pass
        assert str(info.value) == (
            f"out.mp4 is being written by process {proc.pid} (svi generate --seed 1)"
        )
        assert json.loads(lock.read_text())["pid"] == proc.pid  # the holder's lock is intact
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    lock = tmp_path / "out.mp4.lock"
    proc = _holder(lock)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.exists()  # kill -9 leaves the file; the kernel dropped the flock
    with locks.exclusive(lock, "out.mp4", command="svi again"):
        assert json.loads(lock.read_text()) == {"pid": os.getpid(), "command": "svi again"}
    assert not lock.exists()


def test_reentrant_in_one_thread_exclusive_across_threads(tmp_path: Path) -> None:
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    errors: list[str] = []
    with locks.exclusive(lock, "run"):
        with locks.exclusive(lock, "run"):  # the CLI and the library may both take it
            pass
        assert lock.exists()

        def other() -> None:
            try:
                with locks.exclusive(lock, "run"):
                    pass
            except SviError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert errors == ["run is being written by another thread of this process"]
    assert not lock.exists()


def test_a_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with (
        pytest.raises(SviError, match="does not exist"),
        locks.exclusive(tmp_path / "no" / "x.lock", "x"),
    ):
        pass


def test_signals_raise_once_then_are_ignored_until_the_block_ends() -> None:
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background
    with pytest.raises(Interrupted) as info, interrupts.raising():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert info.value.exit_code == 143 and str(info.value) == "interrupted (SIGTERM)"
    assert signal.getsignal(signal.SIGINT) == before  # restored


def test_a_stop_in_a_nested_block_stays_a_stop_until_the_outermost_ends() -> None:
    """``svi generate`` runs a raising() block (the run) inside another (the CLI): when
    the inner one ends after a stop, a late second Ctrl-C must not be re-armed and cut
    the report of the first (it printed "interrupted (SIGINT)" without what was written)."""
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as info, interrupts.raising():
        try:
            with interrupts.raising():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    pass
        except Interrupted as first:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, late
            for _ in range(1000):
                pass
            raise first.with_message("wrote 3 clips") from None
    assert str(info.value) == "interrupted (SIGINT): wrote 3 clips"
    assert signal.getsignal(signal.SIGINT) == before  # the outermost block restores


def test_the_cli_ignores_signals_after_reporting_a_stop(monkeypatch, capsys) -> None:
    """The process is ending: a Ctrl-C during interpreter shutdown must not become a
    KeyboardInterrupt traceback after the one error line."""
    from svi import cli

    def stopped(**_):
        raise Interrupted(signal.SIGINT).with_message("wrote 2 clips")

    before = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(cli, "app", stopped)
    try:
        assert cli.main(["generate"]) == 130
        assert capsys.readouterr().err == "error: interrupted (SIGINT): wrote 2 clips\n"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_deferred_signals_wait_for_the_safe_point() -> None:
    done = []
    with pytest.raises(Interrupted) as info, interrupts.raising():
        with interrupts.deferred() as pending:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("bookkeeping")
        pending.raise_if_any()
    assert done == ["bookkeeping"] and info.value.signum == signal.SIGINT
    assert info.value.with_message("wrote 3 clips").args == ("interrupted (SIGINT): wrote 3 clips",)


def test_one_line_escapes_control_characters() -> None:
    assert one_line("a\x1b[31mred\x1b[0m\nnext\tline\x07\x9b\u202e") == (
        "a\\x1b[31mred\\x1b[0m next line\\x07\\x9b\\u202e"
    )
