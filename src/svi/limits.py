"""Process limits the command line checks before it imports anything heavy.

Under an address-space limit (``ulimit -v``) too small for torch and scipy, importing
scipy does not fail: the process never leaves the C initialisation of scipy.linalg's
BLAS extension (its bundled OpenBLAS), one thread at 100 % CPU, deaf to Ctrl-C (issue
28: ``ulimit -v 800000; svi generate --clips 1`` ran until ``kill -9``; seen in a
py-spy dump). So the CLI refuses such a limit at once, with one
line, instead of hanging. The need was measured: a 1-clip world video peaks at 1.31
GiB of address space (``VmPeak``, one thread); the margin covers more threads.
"""

from __future__ import annotations

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
