"""CPU thread policy of the command line, decided once before torch is imported.

OpenMP threads spin while they wait for work (GNU OpenMP's default). On an idle
machine that is the fastest choice; next to another busy process two spinning thread
pools steal each other's cores and a run can take three times as long
(``benchmarks/startup_bench.py``). So the CLI looks at how busy the cores are for a
moment at start-up: when other processes keep cores busy it uses only the idle cores
(at least one) and lets waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``); on an idle
machine it changes nothing. A user who sets ``OMP_NUM_THREADS`` or ``OMP_WAIT_POLICY``
decides alone. The library itself (``import svi``) never touches thread settings.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger(__name__)

USER_SETTINGS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
SAMPLE_SECONDS = 0.1
BUSY_CORE = 0.5  # a core counts as taken when others use more than half of it


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores kept busy by all processes over ``seconds`` (from ``/proc/stat``), or None
    where the kernel does not say (not Linux)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(seconds)
    second = _cpu_times()
    if second is None:
        return None
    total = sum(second) - sum(first)
    idle = (second[3] + second[4]) - (first[3] + first[4])  # idle + iowait
    if total <= 0:
        return None
    return (os.cpu_count() or 1) * (total - idle) / total


def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 6:
        return None
    return [int(x) for x in fields[1:9]]


def threads_for(cores: int, busy: float | None) -> int | None:
    """Torch threads for ``cores`` cores of which ``busy`` are used by others: None to
    keep the default (idle machine or unknown), else the idle cores, at least one."""
    if busy is None or busy < BUSY_CORE:
        return None
    return max(1, cores - round(busy))


def configure(environ: dict[str, str] | None = None) -> str | None:
    """Apply the policy to ``environ`` (default ``os.environ``) before torch loads; the
    reason, for the log, or None when nothing changed."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules or any(name in env for name in USER_SETTINGS):
        return None
    cores = os.cpu_count() or 1
    busy = busy_cores()
    threads = threads_for(cores, busy)
    if threads is None:
        return None
    env["OMP_NUM_THREADS"] = str(threads)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return (f"{busy:.1f} of {cores} cores busy at start: {threads} torch thread(s), "
            "threads sleep while waiting (set OMP_NUM_THREADS to override)")  # fmt: skip
