"""Error-Recycling Fine-Tuning (SVI_SPEC section 3).

- :func:`one_step_errors`: the bidirectional one-step errors ``(1 - s) dv`` and ``-s dv``;
- :class:`ErrorBank`: the replay memory, binned by the N inference sigmas;
- :class:`ErrorInjector` / :class:`Injection`: per-sample coins, error injection into
  noise, video and conditioning, and the banking of new errors;
- :func:`make_banks`: the (noise, video) bank pair of a config;
- :func:`augment_y`: the handcrafted-degradation baseline (blur, noise, colour jitter
  on the same slice of y as the image error), no bank involved.
"""

from __future__ import annotations

import torch

from svi.config import ErftConfig
from svi.erft.augment import Augmentation, augment_y
from svi.erft.bank import ErrorBank
from svi.erft.errors import one_step_errors
from svi.erft.inject import ErrorInjector, Injection
from svi.flow import inference_sigmas

__all__ = [
    "Augmentation",
    "ErrorBank",
    "ErrorInjector",
    "Injection",
    "augment_y",
    "make_banks",
    "one_step_errors",
]


def make_banks(
    config: ErftConfig,
    steps_shift: float,
    seed: int,
    storage_dtype: torch.dtype = torch.bfloat16,
    max_bytes: int | None = None,
    spatial_pool: int = 1,
) -> tuple[ErrorBank, ErrorBank]:
    """``(noise_bank, video_bank)`` with bins = the ``num_bins`` inference sigmas.

    Bins are ``inference_sigmas(config.num_bins, shift)[:-1]`` with ``shift =
    config.bin_shift`` or else the sampler's ``steps_shift`` (the final 0 of the
    sampler grid is not a step, so not a bin); training sigmas below the midpoint of the
    last two fall into the last bin. ``max_bytes`` caps EACH bank. The two banks draw
    with independent RNGs seeded ``seed`` and ``seed + 1``.
    """
    bins = inference_sigmas(config.num_bins, config.bin_shift or steps_shift)[:-1]
    kw = {
        "capacity": config.capacity,
        "replacement": config.replacement,
        "storage_dtype": storage_dtype,
        "max_bytes": max_bytes,
        "spatial_pool": spatial_pool,
    }
    return ErrorBank(bins, seed=seed, **kw), ErrorBank(bins, seed=seed + 1, **kw)
