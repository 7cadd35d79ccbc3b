"""Handcrafted augmentation of the conditioning frames (the paper's Table 6 contender).

Where ERFT adds a recycled model error to ``y[:, 4:, 0:k]`` (SVI_SPEC section 3, step 3),
this baseline degrades the same slice by hand: the first ``k = min(frames, f)`` latent
frames of the VAE-latent part of ``y`` (B, 4 + C, f, h, w). The mask channels
``y[:, :4]`` and the latent frames from ``k`` on are never touched; noise, clean latent
and target are left alone, so the loop still regresses the clean velocity
``eps - x0`` and the model learns to ignore the degradations.

Per sample ``b``, with uniforms drawn from the training loop's generator only (so a
resumed run is bit-exact; the loop checkpoints that generator):

1. ``clean_b ~ Bernoulli(p_clean)``; if not clean, independently
   ``blur_b ~ Bernoulli(p_blur)``, ``noise_b ~ Bernoulli(p_noise)``,
   ``colour_b ~ Bernoulli(p_colour)``.
2. Strengths uniform up to the configured maxima: blur sigma in ``[0, blur_sigma]``,
   noise std in ``[0, noise_std]``, contrast factor in ``[1 - contrast, 1 + contrast]``,
   a shared offset in ``[-brightness, brightness]`` plus a per-channel offset in
   ``[-colour_shift, colour_shift]``.
3. In that order: separable Gaussian blur over (h, w) of every frame; colour jitter
   ``mean_c + contrast * (z - mean_c) + offset_c`` (``mean_c`` = the channel's mean over
   the k frames); additive Gaussian noise ``z + std * n``.

Units: everything acts on ``y``'s latent part. For the embedded world model the codec
is the identity on pixels in [-1, 1], so these are pixel-space degradations (sigma in
pixels, offsets and std in [-1, 1] units). For Wan they degrade the normalised VAE
latents (sigma in latent pixels = 8 image pixels; std and offsets in units of the
per-channel latent std): the same knobs, not the same images - a latent "colour
shift" is not an RGB shift. No clamping either way (ERFT does not clamp).

The number of draws per step is fixed (``8 + C`` uniforms per sample and one normal
per element of the slice, whatever the coins say), so the stream never shifts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from svi.conditioning import MASK_CHANNELS
from svi.config import AugmentConfig

log = logging.getLogger(__name__)

CORRUPTIONS = ("blur", "noise", "colour")

# columns of the per-sample uniforms; the per-channel shifts follow from _SHIFT on
_CLEAN, _BLUR, _BLUR_SIGMA, _NOISE, _NOISE_STD, _COLOUR, _CONTRAST, _BRIGHTNESS, _SHIFT = range(9)


@dataclass
class Augmentation:
    """What one step did: the degraded ``y`` and, per sample, the coins and strengths.

    ``clean`` and every ``used[name]`` are (B,) bool; ``blur_sigma`` and ``noise_std``
    (B,) are 0 where unused, ``contrast`` (B,) is 1 and ``offset`` (B, C) is 0 there.
    """

    y: Tensor
    clean: Tensor
    used: dict[str, Tensor]
    blur_sigma: Tensor
    noise_std: Tensor
    contrast: Tensor
    offset: Tensor

    def rates(self) -> dict[str, float]:
        """Fractions of the batch that were clean / got each corruption (logging)."""
        out = {"clean": float(self.clean.float().mean())}
        out.update({name: float(u.float().mean()) for name, u in self.used.items()})
        return out


def gaussian_kernel(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` > 0, radius ``ceil(3 sigma)``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur over the last two dims of ``x`` (..., h, w), edges replicated.

    ``sigma <= 0`` returns ``x`` unchanged. A constant image stays constant.
    """
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma).to(x)
    r = (k.numel() - 1) // 2
    h, w = x.shape[-2:]
    z = x.reshape(-1, 1, h, w)
    z = F.conv2d(F.pad(z, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))  # along w
    z = F.conv2d(F.pad(z, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))  # along h
    return z.reshape(x.shape)


def colour_jitter(x: Tensor, contrast: float, offset: Tensor) -> Tensor:
    """``mean_c + contrast * (x - mean_c) + offset_c`` for ``x`` (C, ...), ``offset`` (C,)."""
    view = (-1,) + (1,) * (x.ndim - 1)
    mean = x.reshape(x.shape[0], -1).mean(1).view(view)
    return mean + contrast * (x - mean) + offset.to(x).view(view)


def add_gaussian_noise(x: Tensor, std: float, noise: Tensor) -> Tensor:
    """``x + std * noise`` (``noise`` standard normal, the shape of ``x``)."""
    return x + std * noise.to(x)


def augment_y(y: Tensor, config: AugmentConfig, generator: torch.Generator) -> Augmentation:
    """Degrade ``y[:, 4:, :k]`` of ``y`` (B, 4 + C, f, h, w) as in the module docstring.

    Returns a new tensor; ``y`` is not modified.
    """
    if y.ndim != 5 or y.shape[1] <= MASK_CHANNELS:
        raise ValueError(f"y {tuple(y.shape)} must be (B, {MASK_CHANNELS} + C, f, h, w)")
    batch, channels, k = y.shape[0], y.shape[1] - MASK_CHANNELS, min(config.frames, y.shape[2])
    dev = generator.device
    u = torch.rand(batch, _SHIFT + channels, generator=generator, device=dev).cpu().double()
    noise = torch.randn((batch, channels, k, *y.shape[3:]), generator=generator, device=dev)

    clean = u[:, _CLEAN] < config.p_clean
    used = {
        "blur": ~clean & (u[:, _BLUR] < config.p_blur),
        "noise": ~clean & (u[:, _NOISE] < config.p_noise),
        "colour": ~clean & (u[:, _COLOUR] < config.p_colour),
    }
    blur_sigma = torch.where(used["blur"], u[:, _BLUR_SIGMA] * config.blur_sigma, 0.0)
    noise_std = torch.where(used["noise"], u[:, _NOISE_STD] * config.noise_std, 0.0)
    contrast = torch.where(used["colour"], 1 + (2 * u[:, _CONTRAST] - 1) * config.contrast, 1.0)
    offset = (2 * u[:, _BRIGHTNESS:_SHIFT] - 1) * config.brightness  # (B, 1), all channels
    offset = offset + (2 * u[:, _SHIFT:] - 1) * config.colour_shift  # (B, C)
    offset = torch.where(used["colour"][:, None], offset, 0.0)

    out = y.clone()
    for b in range(batch):
        z = out[b, MASK_CHANNELS:, :k]  # (C, k, h, w), a view into out
        if used["blur"][b]:
            z = gaussian_blur(z, float(blur_sigma[b]))
        if used["colour"][b]:
            z = colour_jitter(z, float(contrast[b]), offset[b])
        if used["noise"][b]:
            z = add_gaussian_noise(z, float(noise_std[b]), noise[b])
        out[b, MASK_CHANNELS:, :k] = z
    aug = Augmentation(out, clean, used, blur_sigma.float(), noise_std.float(),
                       contrast.float(), offset.float())  # fmt: skip
    log.debug("augment: %s", aug.rates())
    return aug
