"""Flow matching, one convention for the whole project: noise at sigma = 1, data at 0.

    x_t = (1 - sigma) * x0 + sigma * noise          (interpolate)
    v   = noise - x0                                (velocity_target)
    x0  = x_t - sigma * v                           (to_data_end)
    noise = x_t + (1 - sigma) * v                   (to_noise_end)
    x <- x + (sigma_next - sigma) * v_hat           (euler_step)

The DiT receives ``timestep = 1000 * sigma``. Sigmas follow the shifted schedule
``s = shift * u / (1 + (shift - 1) * u)`` of Wan (shift 5 at 480p) for ``u`` on a
uniform grid. See SVI_SPEC.md section 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(u: Tensor | float, shift: float) -> Tensor | float:
    """Shift uniform times ``u`` in [0, 1] towards the noise end: ``shift*u/(1+(shift-1)*u)``."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * u / (1 + (shift - 1) * u)


def inference_sigmas(num_steps: int, shift: float) -> Tensor:
    """Descending sampler grid of ``num_steps + 1`` sigmas: 1, ..., > 0, then 0 appended.

    ``u`` runs over ``linspace(1, 0, num_steps + 1)[:-1]`` (shifted), so step ``i`` goes
    from ``sigmas[i]`` to ``sigmas[i + 1]`` and the last step lands exactly on data.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    u = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)[:-1]
    sigmas = shift_sigmas(u, shift)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def training_sigmas(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, shift: float = 5.0) -> Tensor:
    """The training grid: shifted ``linspace(1, 0, N + 1)[:-1]`` (N values, 1 down to > 0)."""
    u = torch.linspace(1.0, 0.0, num_train_timesteps + 1, dtype=torch.float64)[:-1]
    return shift_sigmas(u, shift).to(torch.float32)


def _per_batch(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or per-batch-element ``sigma`` of shape (B,) against ``x`` (B, ...)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma
    if sigma.ndim != 1 or sigma.shape[0] != x.shape[0]:
        raise ValueError(f"sigma of shape {tuple(sigma.shape)} does not match batch {x.shape[0]}")
    return sigma.view(-1, *([1] * (x.ndim - 1)))


def interpolate(x0: Tensor, noise: Tensor, sigma: Tensor | float) -> Tensor:
    """The point on the straight path at ``sigma``: ``(1 - sigma) * x0 + sigma * noise``."""
    s = _per_batch(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The constant velocity of the straight path from data to noise: ``noise - x0``."""
    return noise - x0


def to_data_end(x_t: Tensor, sigma: Tensor | float, v: Tensor) -> Tensor:
    """Integrate velocity ``v`` from ``sigma`` to 0 in one step: ``x_t - sigma * v``."""
    return x_t - _per_batch(sigma, x_t) * v


def to_noise_end(x_t: Tensor, sigma: Tensor | float, v: Tensor) -> Tensor:
    """Integrate velocity ``v`` from ``sigma`` to 1 in one step: ``x_t + (1 - sigma) * v``."""
    return x_t + (1 - _per_batch(sigma, x_t)) * v


def euler_step(x: Tensor, v: Tensor, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
    """One Euler step of the sampler: ``x + (sigma_next - sigma) * v``."""
    return x + (_per_batch(sigma_next, x) - _per_batch(sigma, x)) * v


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: ``v_uncond + scale * (v_cond - v_uncond)``."""
    return v_uncond + scale * (v_cond - v_uncond)


def timestep_weight(
    t: Tensor, shift: float = 5.0, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> Tensor:
    """Optional loss weight of the released SVI code: a bell curve over DiT timesteps.

    ``w(t) = exp(-2 * ((t - N/2) / N)^2)`` minus its minimum over the training grid
    (so it is zero at ``t = N``, the pure-noise end), normalised to mean 1 over the
    ``N`` grid timesteps ``1000 * training_sigmas(N, shift)``.
    """
    n = num_train_timesteps
    grid = training_sigmas(n, shift).to(torch.float64) * n

    def bell(x: Tensor) -> Tensor:
        return torch.exp(-2 * ((x - n / 2) / n) ** 2)

    floor = bell(grid).min()
    norm = (bell(grid) - floor).mean()
    t64 = torch.as_tensor(t, dtype=torch.float64)
    return ((bell(t64) - floor) / norm).to(torch.float32)


def sample_training_sigmas(
    batch: int,
    generator: torch.Generator,
    shift: float = 5.0,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> Tensor:
    """Draw ``batch`` sigmas uniformly from the training grid (median ~0.83 at shift 5)."""
    grid = training_sigmas(num_train_timesteps, shift)
    idx = torch.randint(0, num_train_timesteps, (batch,), generator=generator)
    return grid[idx]
