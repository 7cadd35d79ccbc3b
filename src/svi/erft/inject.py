"""Error injection of ERFT (SVI_SPEC section 3, steps 2-4, and the banking of step 7).

For one training step on clean latents ``x0`` (B, C, f, h, w), noise ``eps`` of the same
shape, conditioning ``y`` (B, 4 + C, f, h, w) (4 mask channels, then the VAE latent of
the conditioning video) and per-sample sigmas ``s`` (B,), every sample ``b`` gets:

1. Coins, from the injector's ``generator`` only (so a run is exactly reproducible):
   ``clean_b ~ Bernoulli(p_clean)``; if not clean, independently
   ``noise_b ~ Bernoulli(p_noise)``, ``video_b ~ Bernoulli(p_video)``,
   ``image_b ~ Bernoulli(p_image)``; a clean sample has all three off.
2. Errors, sampled uniformly by the banks (each bank draws with its own RNG), each
   multiplied by ``a = error_scale``:

   - ``eps~ = eps + a * E_noi``, ``E_noi`` from the noise bank, bin of ``s_b``;
   - ``x0~ = x0 + a * E_vid``, ``E_vid`` from the video bank, bin of ``s_b``;
   - ``y~[:, 4:, 0:k] = y[:, 4:, 0:k] + a * E_img[:, j:j+k]``, ``E_img`` from the video
     bank pooled over ALL bins (occupancy-weighted; only the bins of sigma <=
     ``image_sigma_max`` when that is below 1; from the rollout bank of
     :mod:`svi.erft.rollout` when ``image_errors = "rollout"``),
     ``k = min(image_error_frames, f)``,
     window start ``j`` uniform in ``[0, f - k]``. The mask channels ``y[:, :4]`` and
     the latent frames from ``k`` on are never touched.

   A term whose bank (or bin) is empty is off for that sample: ``used`` records what
   was really injected.
3. The target is the error-recycled velocity with the CLEAN data end:
   ``v* = eps~ - x0``. The training loop then builds ``x_t = (1 - s) x0~ + s eps~``
   (``flow.interpolate(inj.x0_in, inj.noise, s)``) and runs the model on ``y~``.
4. Banking (:meth:`ErrorInjector.errors`, then :meth:`ErrorInjector.add`):
   ``dv = v_hat - v*``, ``E_noi <- (1 - s) dv`` into the noise bank and
   ``E_vid <- -s dv`` into the video bank, both at the sample's sigma. Samples with an
   injected error are always banked; a clean sample only with probability
   ``clean_bank_prob`` (its coin is drawn in :meth:`ErrorInjector.inject`, recorded in
   ``Injection.bank``).

Nothing here modifies its inputs in place.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from svi.conditioning import MASK_CHANNELS
from svi.config import ErftConfig
from svi.erft.bank import ErrorBank
from svi.erft.errors import one_step_errors
from svi.errors import SviError
from svi.flow import velocity_target

log = logging.getLogger(__name__)

TERMS = ("noise", "video", "image")

# columns of the per-sample uniforms drawn from the generator (a fixed number per
# sample and step, whatever the banks hold, so the coin stream never shifts)
_CLEAN, _NOISE, _VIDEO, _IMAGE, _BANK, _WINDOW = range(6)


@dataclass
class Injection:
    """What one training step used: the corrupted inputs, the target, and the coins.

    ``noise = eps + a E_noi`` and ``x0_in = x0 + a E_vid`` (B, C, f, h, w);
    ``y`` = the conditioning with ``a E_img`` added to ``y[:, 4:, :k]``;
    ``target = noise - x0`` (clean ``x0``). ``clean``, ``bank`` and every ``used[term]``
    are (B,) bool CPU tensors; ``image_offset`` (B,) long is the window start ``j`` of
    ``E_img`` where it was used and -1 elsewhere.
    """

    noise: Tensor
    x0_in: Tensor
    y: Tensor
    target: Tensor
    clean: Tensor
    used: dict[str, Tensor]
    bank: Tensor
    image_offset: Tensor

    def rates(self) -> dict[str, float]:
        """Fractions of the batch that were clean / got each term / are banked (logging)."""
        out = {"clean": float(self.clean.float().mean()), "bank": float(self.bank.float().mean())}
        out.update({t: float(u.float().mean()) for t, u in self.used.items()})
        return out


class ErrorInjector:
    """Draws the per-sample coins, samples errors from the banks, and banks new errors.

    ``noise_bank`` and ``video_bank`` hold errors of one sample's latent shape
    (C, f, h, w). ``generator`` drives the coins and image windows only; the banks
    draw which stored error to use with their own (checkpointed) RNG.
    """

    def __init__(
        self,
        config: ErftConfig,
        noise_bank: ErrorBank,
        video_bank: ErrorBank,
        generator: torch.Generator,
        image_bank: ErrorBank | None = None,
    ) -> None:
        for name in ("p_noise", "p_video", "p_image", "p_clean", "clean_bank_prob"):
            p = getattr(config, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if config.image_error_frames < 1:
            raise ValueError(f"image_error_frames must be >= 1, got {config.image_error_frames}")
        if not math.isfinite(config.error_scale):
            raise ValueError(f"error_scale must be finite, got {config.error_scale}")
        lowest = float(video_bank.bin_sigmas.min())
        if config.image_sigma_max < lowest:
            raise SviError(f"image_sigma_max {config.image_sigma_max} is below every bin "
                             f"sigma (lowest {lowest:.3f})")  # fmt: skip
        if config.image_errors == "rollout" and image_bank is None:
            raise SviError("erft.image_errors = 'rollout' needs the rollout error bank")
        self.config = config
        self.noise_bank = noise_bank
        self.video_bank = video_bank
        self.image_bank = image_bank if config.image_errors == "rollout" else None
        self.generator = generator

    # -- injection -----------------------------------------------------------------
    def inject(self, x0: Tensor, noise: Tensor, y: Tensor, sigma: Tensor | float) -> Injection:
        """Corrupt one batch as in the module docstring; returns new tensors only.

        ``x0`` and ``noise`` are (B, C, f, h, w), ``y`` is (B, 4 + C, f_y, h, w),
        ``sigma`` a scalar or (B,) (used only to pick the bins).
        """
        if noise.shape != x0.shape or x0.ndim != 5:
            raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must be "
                             "the same (B, C, f, h, w)")  # fmt: skip
        batch, channels = x0.shape[:2]
        if y.ndim != 5 or y.shape[0] != batch or y.shape[1] != MASK_CHANNELS + channels:
            raise ValueError(f"y {tuple(y.shape)} must be (B, {MASK_CHANNELS} + C, f, h, w) "
                             f"for x0 {tuple(x0.shape)}")  # fmt: skip
        sig = _per_sample(sigma, batch)
        cfg = self.config
        scale = cfg.error_scale
        max_sigma = None if cfg.image_sigma_max >= 1.0 else cfg.image_sigma_max

        u = torch.rand(batch, 6, generator=self.generator, device=self.generator.device).cpu()
        clean = u[:, _CLEAN] < cfg.p_clean
        want = {
            "noise": ~clean & (u[:, _NOISE] < cfg.p_noise),
            "video": ~clean & (u[:, _VIDEO] < cfg.p_video),
            "image": ~clean & (u[:, _IMAGE] < cfg.p_image),
        }
        bank = ~clean | (u[:, _BANK] < cfg.clean_bank_prob)
        used = {t: torch.zeros(batch, dtype=torch.bool) for t in TERMS}
        offset = torch.full((batch,), -1, dtype=torch.long)

        noise_in, x0_in, y_in = noise.clone(), x0.clone(), y.clone()
        for b in range(batch):
            s = float(sig[b])
            if want["noise"][b]:
                used["noise"][b] = _add_binned(self.noise_bank, s, noise_in[b], scale, "noise")
            if want["video"][b]:
                used["video"][b] = _add_binned(self.video_bank, s, x0_in[b], scale, "video")
            if want["image"][b]:
                e = (self.video_bank.sample_pooled(max_sigma) if self.image_bank is None
                     else self.image_bank.sample_pooled())  # fmt: skip
                if e is not None:
                    if e.ndim != 4 or e.shape[0] != channels or e.shape[2:] != y.shape[3:]:
                        raise ValueError(f"video bank error {tuple(e.shape)} does not fit the "
                                         f"latent part of y {tuple(y.shape)}")  # fmt: skip
                    frames = e.shape[1]
                    k = min(cfg.image_error_frames, frames, y.shape[2])
                    j = min(int(float(u[b, _WINDOW]) * (frames - k + 1)), frames - k)
                    y_in[b, MASK_CHANNELS:, :k] += scale * e[:, j : j + k].to(y_in)
                    used["image"][b] = True
                    offset[b] = j

        target = velocity_target(x0, noise_in)  # v* = eps~ - x0, the CLEAN data end
        inj = Injection(noise_in, x0_in, y_in, target, clean, used, bank, offset)
        log.debug("erft inject: %s", inj.rates())
        return inj

    # -- banking -------------------------------------------------------------------
    @torch.no_grad()
    def errors(
        self, injection: Injection, x_t: Tensor, sigma: Tensor | float, v_pred: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One-step errors of the whole batch: ``(e_noise, e_video, sigma, keep)``.

        ``dv = v_pred - v*`` with ``v* = injection.target``: ``e_noise = (1 - s) dv`` and
        ``e_video = -s dv`` (SVI_SPEC section 3, step 6); ``keep`` = ``injection.bank``.
        Fixed shapes, so a multi-process loop can all-gather them before :meth:`add`.
        """
        batch = x_t.shape[0]
        sig = _per_sample(sigma, batch)
        keep = injection.bank.to("cpu", torch.bool).reshape(-1)
        if keep.numel() != batch:
            raise ValueError(f"injection of batch {keep.numel()} for x_t of batch {batch}")
        e_noise, e_video = one_step_errors(x_t, sig.to(x_t.device), v_pred, injection.target)
        return e_noise, e_video, sig, keep

    @torch.no_grad()
    def add(self, e_noise: Tensor, e_video: Tensor, sigma: Tensor, keep: Tensor) -> int:
        """Bank the rows with ``keep`` set at their sigmas; returns how many."""
        idx = keep.to("cpu", torch.bool).reshape(-1).nonzero().flatten()
        if idx.numel() == 0:
            return 0
        sig = sigma.detach().to("cpu", torch.float32).reshape(-1)[idx]
        self.noise_bank.add(e_noise[idx.to(e_noise.device)], sig)
        self.video_bank.add(e_video[idx.to(e_video.device)], sig)
        return int(idx.numel())


def _per_sample(sigma: Tensor | float, batch: int) -> Tensor:
    """Sigma as a (B,) float32 CPU tensor (a scalar is broadcast)."""
    s = torch.as_tensor(sigma).detach().to("cpu", torch.float32).reshape(-1)
    if s.numel() == 1:
        return s.expand(batch).clone()
    if s.numel() != batch:
        raise ValueError(f"sigma of {s.numel()} values for a batch of {batch}")
    return s


def _add_binned(bank: ErrorBank, sigma: float, row: Tensor, scale: float, name: str) -> bool:
    """``row += scale * E`` with E from the bin of ``sigma`` (in place); False if empty."""
    error = bank.sample(sigma)
    if error is None:
        return False
    if error.shape != row.shape:
        raise ValueError(f"{name} bank error {tuple(error.shape)} != sample shape "
                         f"{tuple(row.shape)}")  # fmt: skip
    row += scale * error.to(row)
    return True
