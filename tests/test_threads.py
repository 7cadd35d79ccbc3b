"""The CLI's start-up thread policy (svi.threads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from svi import threads


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [(2, None, None), (2, 0.0, None), (2, 0.49, None), (2, 0.6, 1), (2, 1.9, 1),
     (2, 2.0, 1), (16, 3.2, 13), (16, 15.8, 1), (1, 0.9, 1)],
)  # fmt: skip
def test_threads_for_uses_the_idle_cores(cores, busy, expected):
    assert threads.threads_for(cores, busy) == expected


def test_busy_cores_is_a_core_count():
    busy = threads.busy_cores(0.05)
    if busy is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-9


def _configure(monkeypatch, env: dict, busy: float | None):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: busy)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    return threads.configure(env)


def test_busy_machine_gets_the_idle_cores_and_sleeping_threads(monkeypatch):
    env: dict[str, str] = {}
    reason = _configure(monkeypatch, env, busy=1.7)
    assert env == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    assert "1.7 of 2 cores busy" in reason


def test_idle_machine_is_left_alone(monkeypatch):
    env: dict[str, str] = {}
    assert _configure(monkeypatch, env, busy=0.1) is None
    assert env == {}


@pytest.mark.parametrize("name", threads.USER_SETTINGS)
def test_the_users_setting_wins(monkeypatch, name):
    env = {name: "3"}
    assert _configure(monkeypatch, env, busy=2.0) is None
    assert env == {name: "3"}


def test_nothing_changes_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401  (the policy only works before OpenMP starts)

    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: 2.0)
    env: dict[str, str] = {}
    assert threads.configure(env) is None and env == {}


def test_cli_applies_the_policy_before_torch(tmp_path):
    """A real CLI process next to a busy one: torch sees the threads the policy chose."""
    burn = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    burn2 = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        env = {k: v for k, v in os.environ.items() if k not in threads.USER_SETTINGS}
        out = subprocess.run([sys.executable, "-m", "svi.cli", "info"], env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    finally:
        burn.kill()
        burn2.kill()
        burn.wait()
        burn2.wait()
    cores = os.cpu_count() or 1
    row = next(line for line in out.splitlines() if line.startswith("torch threads"))
    assert int(row.split()[-1]) <= max(1, cores - 1)
