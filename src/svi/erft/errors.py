"""One-step bidirectional errors of ERFT (SVI_SPEC section 3, step 6).

With the model's velocity ``v_pred`` and the (error-recycled) target ``v_target`` at
``x_t``, integrating both in ONE step to each end of the path and differencing gives

    e_noise = to_noise_end(x_t, s, v_pred) - to_noise_end(x_t, s, v_target) = (1 - s) dv
    e_video = to_data_end(x_t, s, v_pred)  - to_data_end(x_t, s, v_target)  = -s dv

with ``dv = v_pred - v_target``: what the model would get wrong about the noise it
started from and about the clean video it is heading to. No extra forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from svi.flow import to_data_end, to_noise_end


@torch.no_grad()
def one_step_errors(
    x_t: Tensor, sigma: Tensor | float, v_pred: Tensor, v_target: Tensor
) -> tuple[Tensor, Tensor]:
    """``(e_noise, e_video)`` of shape ``x_t.shape``; zero iff ``v_pred == v_target``."""
    v_pred = v_pred.detach().to(x_t.dtype)
    e_noise = to_noise_end(x_t, sigma, v_pred) - to_noise_end(x_t, sigma, v_target)
    e_video = to_data_end(x_t, sigma, v_pred) - to_data_end(x_t, sigma, v_target)
    return e_noise, e_video
