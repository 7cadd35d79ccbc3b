"""Process limits the command line checks before it imports anything heavy.

Under an address-space limit (``ulimit -v``) too small for torch and scipy, importing
scipy does not fail: the process never leaves the C initialisation of scipy.linalg's
BLAS extension (its bundled OpenBLAS), one thread at 100 % CPU, deaf to Ctrl-C (issue
28: ``ulimit -v 800000; svi generate --clips 1`` ran until ``kill -9``; seen in a
py-spy dump). So the CLI refuses such a limit at once, with one
line, instead of hanging. The need was measured: a 1-clip world video peaks at 1.31
GiB of address space (``VmPeak``, one thread); the margin covers more threads.

OpenMP settings that GNU OpenMP cannot parse (``OMP_NUM_THREADS=0``) are ignored by it
with a raw ``libgomp: Invalid value ...`` line when torch loads; the CLI refuses them
first, with one line of its own.
"""

from __future__ import annotations

import os
import resource

MIN_ADDRESS_SPACE = 3 * 2**29  # 1.5 GiB


def address_space_error(need: int = MIN_ADDRESS_SPACE) -> str | None:
    """The message for an address-space limit below ``need`` bytes, else None."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    return (f"the address-space limit (ulimit -v) is {soft / 2**20:.0f} MiB; svi needs at "
            f"least {need / 2**30:.1f} GiB (torch and scipy map that much at start-up): raise "
            "it, e.g. ulimit -v unlimited")  # fmt: skip


def thread_settings_error(environ: dict[str, str] | None = None) -> str | None:
    """The message for an ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` that GNU OpenMP
    would reject (it parses them when torch loads), else None."""
    env = os.environ if environ is None else environ
    threads = env.get("OMP_NUM_THREADS")
    if threads is not None and not _thread_counts(threads):
        return (f"OMP_NUM_THREADS={threads!r} is not a thread count: give a positive "
                "integer (e.g. OMP_NUM_THREADS=2) or unset it")  # fmt: skip
    policy = env.get("OMP_WAIT_POLICY")
    if policy is not None and policy.strip().lower() not in ("active", "passive"):
        return f"OMP_WAIT_POLICY={policy!r} must be ACTIVE or PASSIVE (or unset)"
    return None


def _thread_counts(value: str) -> bool:
    """GNU OpenMP's OMP_NUM_THREADS: positive integers separated by commas (one per
    nesting level), spaces around each allowed."""
    items = [item.strip().removeprefix("+") for item in value.split(",")]
    return all(item.isascii() and item.isdigit() and int(item) > 0 for item in items)
