"""Codecs: pixels <-> latents, one interface for every model.

Pixels are ``(B, 3, F, H, W)`` floats in [-1, 1]; latents are ``(B, C, f, h, w)`` with
``f = 1 + (F - 1) // temporal_factor`` (Wan's causal first frame: F = 4k + 1 when the
temporal factor is 4) and ``h = H // spatial_factor``. Latents leave ``encode`` already
normalised, so every model downstream sees roughly unit-variance inputs.

- :class:`PixelCodec`: the exactly invertible identity codec of the tiny world model.
- :class:`WanVAECodec`: diffusers' ``AutoencoderKLWan`` plus the per-channel
  ``latents_mean`` / ``latents_std`` normalisation the Wan pipelines apply.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from svi.errors import SviError

if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan

logger = logging.getLogger(__name__)

__all__ = ["Codec", "PixelCodec", "WanVAECodec", "psnr"]

# Pixels this far outside [-1, 1] are a caller bug (e.g. uint8 or [0, 1] data), not rounding.
_RANGE_TOLERANCE = 1e-3


@runtime_checkable
class Codec(Protocol):
    """Pixels ``(B, 3, F, H, W)`` in [-1, 1] <-> normalised latents ``(B, C, f, h, w)``."""

    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def latent_frames(self, num_frames: int) -> int: ...

    def pixel_frames(self, latent_frames: int) -> int: ...


class _FrameRule:
    """The frame-count arithmetic shared by all codecs (needs ``temporal_factor``)."""

    temporal_factor: int

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` pixel frames; F must be ``k * temporal_factor + 1``."""
        tf = self.temporal_factor
        if num_frames < 1 or (num_frames - 1) % tf != 0:
            raise SviError(
                f"{num_frames} frames cannot be encoded: the codec needs F = {tf}k+1 frames "
                f"(e.g. {tf + 1}, {2 * tf + 1}, {4 * tf + 1})"
            )
        return 1 + (num_frames - 1) // tf

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from ``latent_frames`` latent frames."""
        if latent_frames < 1:
            raise SviError(f"latent frame count must be >= 1, got {latent_frames}")
        return 1 + (latent_frames - 1) * self.temporal_factor


def _check_video(video: torch.Tensor, spatial_factor: int) -> None:
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise SviError(f"expected a video tensor (B, 3, F, H, W), got {shape}")
    if not video.is_floating_point():
        raise SviError(f"expected float pixels in [-1, 1], got dtype {video.dtype}")
    height, width = video.shape[-2:]
    if height % spatial_factor or width % spatial_factor:
        raise SviError(
            f"frame size {height}x{width} is not a multiple of the codec's spatial factor "
            f"{spatial_factor}"
        )
    lo, hi = float(video.min()), float(video.max())
    if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise SviError(f"pixels must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")


def _check_latents(latents: torch.Tensor, channels: int) -> None:
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != channels:
        shape = (
            tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        )
        raise SviError(f"expected latents (B, {channels}, f, h, w), got {shape}")


class PixelCodec(_FrameRule):
    """Identity codec: latent = pixels (3 channels, no compression), exactly invertible.

    ``encode`` only validates; ``decode`` clamps to [-1, 1] so that model outputs that
    overshoot still decode to valid pixels.
    """

    latent_channels = 3
    spatial_factor = 1
    temporal_factor = 1

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_video(video, self.spatial_factor)
        return video  # (B, 3, F, H, W)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        _check_latents(latents, self.latent_channels)
        return latents.clamp(-1.0, 1.0)

    def __repr__(self) -> str:
        return "PixelCodec()"


class WanVAECodec(_FrameRule):
    """``AutoencoderKLWan`` with Wan's latent normalisation ``(z - mean) / std``.

    Args:
        vae: a diffusers ``AutoencoderKLWan`` (any size; its config must carry
            ``latents_mean`` / ``latents_std`` with ``z_dim`` entries and the right
            ``scale_factor_spatial`` / ``scale_factor_temporal``).
        sample: draw ``z`` from the posterior instead of taking its mode (mean).
        generator: the random generator used when ``sample`` is true.
    """

    def __init__(
        self,
        vae: AutoencoderKLWan,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        cfg = vae.config
        self.vae = vae.eval()
        # Where encode / decode run when offloading hooks keep the weights elsewhere
        # (svi.models.offload); None: where the weights are.
        self.execution_device: torch.device | None = None
        self.sample = sample
        self.generator = generator
        self.latent_channels = int(cfg.z_dim)
        self.spatial_factor, self.temporal_factor = _vae_factors(cfg)
        mean, std = cfg.latents_mean, cfg.latents_std
        if len(mean) != self.latent_channels or len(std) != self.latent_channels:
            raise SviError(
                f"vae config has {len(mean)} latents_mean and {len(std)} latents_std values but "
                f"z_dim={self.latent_channels}; set both lists to z_dim entries"
            )
        if any(float(s) <= 0 for s in std):
            raise SviError("vae config latents_std must be positive")
        shape = (1, self.latent_channels, 1, 1, 1)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(shape)
        self._std = torch.tensor(std, dtype=torch.float32).view(shape)

    @property
    def device(self) -> torch.device:
        return self.execution_device or next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the normalised latents models see (float32)."""
        return (z.float() - self._mean.to(z.device)) / self._std.to(z.device)

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> raw VAE latents (float32)."""
        return latents.float() * self._std.to(latents.device) + self._mean.to(latents.device)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_video(video, self.spatial_factor)
        self.latent_frames(video.shape[2])  # raises unless F = k * temporal_factor + 1
        x = video.to(device=self.device, dtype=self.dtype)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(self.generator) if self.sample else posterior.mode()
        return self.normalise(z)  # (B, C, f, h, w)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        _check_latents(latents, self.latent_channels)
        z = self.denormalise(latents.to(self.device)).to(self.dtype)
        video = self.vae.decode(z, return_dict=False)[0]
        return video.float().clamp(-1.0, 1.0)  # (B, 3, F, H, W)

    def __repr__(self) -> str:
        return (
            f"WanVAECodec(z_dim={self.latent_channels}, spatial={self.spatial_factor}, "
            f"temporal={self.temporal_factor}, sample={self.sample})"
        )


def _vae_factors(cfg) -> tuple[int, int]:
    """(spatial, temporal) compression: read from the config, checked against the layers.

    The diffusers pipelines trust ``scale_factor_spatial/temporal`` blindly; a config that
    disagrees with the architecture would silently produce wrong shapes, so fail here.
    """
    arch_spatial = 2 ** (len(cfg.dim_mult) - 1) * int(cfg.patch_size or 1)
    arch_temporal = 2 ** sum(bool(t) for t in cfg.temperal_downsample)
    spatial = getattr(cfg, "scale_factor_spatial", None) or arch_spatial
    temporal = getattr(cfg, "scale_factor_temporal", None) or arch_temporal
    if (int(spatial), int(temporal)) != (arch_spatial, arch_temporal):
        raise SviError(
            f"vae config says scale_factor_spatial={spatial}, scale_factor_temporal={temporal} "
            f"but its layers compress {arch_spatial}x in space and {arch_temporal}x in time; "
            "fix vae/config.json"
        )
    return int(spatial), int(temporal)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB between two videos or images of the same shape.

    uint8 inputs use the [0, 255] scale; float inputs are taken to lie in [-1, 1] (peak-to-
    peak 2). A uint8 tensor compared with a float one is first mapped to [-1, 1].
    Identical inputs give ``inf``.
    """
    if a.shape != b.shape:
        raise SviError(f"psnr needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype == torch.uint8 and b.dtype == torch.uint8:
        x, y, peak = a.double(), b.double(), 255.0
    else:
        x, y, peak = _to_signed(a), _to_signed(b), 2.0
    mse = float(torch.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _to_signed(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.double() / 127.5 - 1.0
    return x.double()
