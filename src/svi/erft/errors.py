"""One-step bidirectional errors of ERFT (SVI_SPEC section 3, step 6).

With the model's velocity ``v_pred`` and the (error-recycled) target ``v_target`` at
``x_t``, integrating both in ONE step to each end of the path and differencing gives

    e_noise = to_noise_end(x_t, s, v_pred) - to_noise_end(x_t, s, v_target) = (1 - s) dv
    e_video = to_data_end(x_t, s, v_pred)  - to_data_end(x_t, s, v_target)  = -s dv

with ``dv = v_pred - v_target``: what the model would get wrong about the noise it
started from and about the clean video it is heading to. No extra forward pass.

Both one-step maps are affine in ``v`` with the same ``x_t`` term, so the errors are
computed as the maps of ``dv`` from the origin (``x_t`` cancels exactly), in float32:
differencing two end-points of magnitude ``|x_t|`` loses the small ``dv`` to rounding
(badly in bf16, measurably even in fp32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from svi.flow import to_data_end, to_noise_end


@torch.no_grad()
def one_step_errors(
    x_t: Tensor, sigma: Tensor | float, v_pred: Tensor, v_target: Tensor
) -> tuple[Tensor, Tensor]:
    """``(e_noise, e_video)``, float32, of shape ``x_t.shape``; zero when ``v_pred == v_target``.

    ``sigma`` is a scalar or per-sample (B,). ``e_noise = (1 - s) dv``, ``e_video = -s dv``.
    """
    dv = v_pred.detach().float() - v_target.detach().float()
    if dv.shape != x_t.shape:
        raise ValueError(f"velocity shape {tuple(dv.shape)} != x_t shape {tuple(x_t.shape)}")
    origin = torch.zeros_like(dv)
    e_noise = to_noise_end(origin, sigma, dv)  # = x_t + (1-s) v_pred - (x_t + (1-s) v_target)
    e_video = to_data_end(origin, sigma, dv)  # = x_t - s v_pred - (x_t - s v_target)
    return e_noise, e_video
