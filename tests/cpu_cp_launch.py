"""``svi`` under torchrun on the CPU, for the context-parallel tests only.

diffusers' ``enable_parallelism`` picks each rank's device as
``rank % torch.accelerator.device_count()`` (diffusers/models/modeling_utils.py,
``ModelMixin._resolve_parallel_config``), and ``device_count()`` is 0 without an
accelerator: a ZeroDivisionError before any hook is applied, so ``svi generate
--parallel`` refuses the CPU in one line. This launcher reports one "device" so the
rest of the engine - its split / gather hooks and the Ulysses all-to-all over gloo - runs
unchanged on CPU processes. Nothing else is patched.
"""

from __future__ import annotations

import torch

if torch.accelerator.device_count() == 0:  # on GPUs the engine runs as it is
    torch.accelerator.device_count = lambda: 1

if __name__ == "__main__":
    from svi.cli import main

    main()
