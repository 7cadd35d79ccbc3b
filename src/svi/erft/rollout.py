"""Rollout errors: image errors harvested from the model's own multi-step generations.

The released ERFT draws the conditioning-image error ``E_img`` from the one-step video
errors of training (blurry mean predictions, large at high sigma). At generation time
the carried frames are instead the END of a full multi-step sampling run, whose error
has another size and spectrum (``svi bench errors``). With ``[erft] image_errors =
"rollout"`` the trainer generates, every ``rollout_every`` steps, one clip of the
current batch from its clean conditioning with the inference sampler
(``rollout_steps`` Euler steps at the preset's sampler shift and CFG) and banks
``generated - clean`` latents: the error a carried frame would really have one clip
later. ``E_img`` is then drawn from that bank (one bin; same window rule as before).
"""

from __future__ import annotations

import torch
from torch import Tensor

from svi.sampling import sample_latents


@torch.no_grad()
def rollout_error(
    velocity,
    x0: Tensor,
    y: Tensor,
    text: Tensor,
    neg: Tensor | None,
    *,
    steps: int,
    shift: float,
    cfg: float,
    generator: torch.Generator,
) -> Tensor:
    """``generated - x0`` (B, C, f, h, w) of clips sampled from noise drawn by
    ``generator`` on conditioning ``y`` and ``text`` (the model's clean inputs)."""
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    generated = sample_latents(velocity, noise, y, text, neg, steps=steps, shift=shift, cfg=cfg)
    return generated - x0
