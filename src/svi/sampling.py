"""One clip: Euler over the shifted sigma grid with text classifier-free guidance.

The sampler is a few small pure functions (as flux's): a velocity function wraps the
DiT (one or two experts), :func:`sample_latents` integrates from noise to data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from svi import flow

VelocityFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``v = f(x_t (B,C,f,h,w), sigma (B,), y (B,4+C,f,h,w), text (B,L,D))``."""


@dataclass
class Experts:
    """The DiT(s) of a model: Wan 2.2 A14B switches experts at ``boundary`` sigma.

    ``high`` runs for sigma >= boundary (the noisy part), ``low`` below it.
    ``image_states`` are CLIP image tokens (Wan 2.1 I2V), passed to every call.
    """

    high: torch.nn.Module
    low: torch.nn.Module | None = None
    boundary: float | None = None
    image_states: Tensor | None = None
    drive: Any = None  # svi.conditions.drive.ClipDrive: this clip's audio / pose condition
    prediction: str = "velocity"  # the DiT's output (svi.models.presets.ModelPreset.prediction)

    def model_for(self, sigma: Tensor) -> torch.nn.Module:
        """The expert for the batch's ``sigma`` (B,): ``low`` below the boundary, else ``high``."""
        n = flow.NUM_TRAIN_TIMESTEPS  # as diffusers: compare t = n * sigma in t's dtype (float32)
        if self.low is not None and self.boundary is not None and sigma[0] * n < self.boundary * n:
            return self.low
        return self.high

    def __call__(
        self, x: Tensor, sigma: Tensor, y: Tensor, text: Tensor, keep: Tensor | None = None
    ) -> Tensor:
        """The velocity; with a ``drive``, rows where ``keep`` (B,) is False get the null
        condition (all rows conditioned when ``keep`` is None)."""
        model = self.model_for(sigma)
        if self.drive is None:
            out = self._call(model, x, sigma, y, text)
        else:
            rows = torch.ones(x.shape[0], dtype=torch.bool) if keep is None else keep
            with self.drive.applied(model, rows):
                out = self._call(model, x, sigma, y, text)
        if self.prediction == "velocity":
            return out
        return residual_velocity(out, x, sigma, y)

    def _call(self, model: torch.nn.Module, x: Tensor, sigma: Tensor, y: Tensor, text: Tensor):
        # the compute dtype: diffusers' ModelMixin.dtype skips the modules kept in float32
        # (a bf16 Wan's first parameter is its float32 modulation table) and reports
        # layerwise casting's compute dtype (fp8 storage, svi.models.offload)
        dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
        inp = torch.cat([x, y], dim=1).to(dtype)  # (B, 2C + 4, f, h, w)
        extra = {}
        if self.image_states is not None:  # one row per video, tiled for the CFG branches
            states = self.image_states.to(dtype)
            reps = x.shape[0] // states.shape[0]
            extra["encoder_hidden_states_image"] = (
                states.expand(x.shape[0], -1, -1)
                if states.shape[0] == 1
                else states.repeat(reps, 1, 1)
            )
        out = model(
            hidden_states=inp,
            timestep=sigma.float() * flow.NUM_TRAIN_TIMESTEPS,  # as diffusers' pipelines
            encoder_hidden_states=text.to(dtype),
            return_dict=False,
            **extra,
        )[0]
        return out.to(x.dtype)


MIN_SIGMA = 1e-4  # the x0 -> velocity conversion's floor (no grid sigma is this small)


def residual_velocity(out: Tensor, x: Tensor, sigma: Tensor, y: Tensor) -> Tensor:
    """The velocity of an ``x0-residual`` output: ``x0 = c + out`` with ``c`` y's
    conditioning video (its last ``C`` channels, after the mask), and
    ``v = (x_t - x0) / sigma`` (flow matching: ``x_t = (1 - s) x0 + s eps``, ``v = eps - x0``)."""
    c = y[:, y.shape[1] - x.shape[1] :]
    s = sigma.to(x.dtype).clamp_min(MIN_SIGMA).view(-1, *([1] * (x.dim() - 1)))
    return (x - (c.to(x.dtype) + out)) / s


def guided_velocity(
    velocity: VelocityFn,
    x: Tensor,
    sigma: Tensor,
    y: Tensor,
    text: Tensor,
    neg: Tensor,
    cfg: float,
    cond_cfg: float = 1.0,
) -> Tensor:
    """CFG on text: one batched call for both branches (``y`` identical in both).

    With ``cond_cfg`` != 1 (SVI-Talk's audio guidance) three branches in one call -
    conditioned ``c``, text dropped ``dt`` (audio kept), neither ``u`` - combined as
    ``u + cfg (c - dt) + cond_cfg (dt - u)`` (MultiTalk's rule); ``velocity`` must take
    ``keep`` (an :class:`Experts` with a drive).
    """
    b = x.shape[0]
    if cond_cfg != 1.0:
        keep = torch.tensor([True] * (2 * b) + [False] * b)
        v = velocity(torch.cat([x, x, x]), torch.cat([sigma, sigma, sigma]),
                     torch.cat([y, y, y]), torch.cat([text, neg, neg]), keep=keep)  # fmt: skip
        v_c, v_dt, v_u = v[:b], v[b : 2 * b], v[2 * b :]
        return v_u + cfg * (v_c - v_dt) + cond_cfg * (v_dt - v_u)
    if cfg == 1.0:
        return velocity(x, sigma, y, text)
    v = velocity(
        torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([y, y]), torch.cat([text, neg])
    )
    return flow.cfg_combine(v[:b], v[b:], cfg)


def dit_passes(steps: int, cfg: float, cond_cfg: float = 1.0) -> int:
    """DiT forward passes (batch rows) one clip costs: ``steps`` times the branches
    :func:`guided_velocity` evaluates - 1 without guidance, 2 with text CFG, 3 with a
    drive's guidance (each pass over the whole clip)."""
    branches = 3 if cond_cfg != 1.0 else 1 if cfg == 1.0 else 2
    return steps * branches


def sample_latents(
    velocity: VelocityFn,
    noise: Tensor,
    y: Tensor,
    text: Tensor,
    neg: Tensor | None = None,
    *,
    steps: int,
    shift: float,
    cfg: float = 1.0,
    cond_cfg: float = 1.0,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Integrate ``noise`` (B, C, f, h, w) to clean latents with ``steps`` Euler steps
    (``cond_cfg``: the drive's guidance, :func:`guided_velocity`)."""
    if (cfg != 1.0 or cond_cfg != 1.0) and neg is None:
        raise ValueError("cfg != 1 needs negative text states")
    sigmas = flow.inference_sigmas(steps, shift).to(noise.device)
    x = noise
    b = noise.shape[0]
    with torch.no_grad():
        for i in range(steps):
            sigma = sigmas[i].expand(b)
            v = guided_velocity(velocity, x, sigma, y, text, neg if neg is not None else text,
                                cfg, cond_cfg)  # fmt: skip
            x = flow.euler_step(x, v, sigmas[i], sigmas[i + 1])
            if on_step is not None:
                on_step(i)
    return x


def clip_noise(shape: tuple[int, ...], seed: int, device: str | torch.device = "cpu") -> Tensor:
    """Deterministic standard-normal noise for one clip (drawn on CPU, then moved)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(device)
