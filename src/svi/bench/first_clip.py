"""The base-model quality gate: first clip only, on held-out world seeds.

Each scene gives the model its first M real frames; the generated frames M..F-1
are scored against ground truth and against copying the last real frame:

- background PSNR off the objects (>= 25 dB to pass);
- location-aware object presence (>= 0.9 to pass);
- MSE to the true frames, which must beat the copy baseline.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from svi.bench import metrics
from svi.conditioning import build_y
from svi.models.bundle import ModelBundle
from svi.pixels import to_signed, to_uint8
from svi.sampling import clip_noise, sample_latents


@dataclass
class FirstClipReport:
    scenes: int
    background_psnr: float
    presence: float
    presence_per_frame: list[float]
    mse: float
    copy_mse: float
    copy_presence: float
    copy_background_psnr: float
    seconds_per_clip: float

    @property
    def passed(self) -> bool:
        return self.background_psnr >= 25 and self.presence >= 0.9 and self.mse < self.copy_mse

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def evaluate_first_clip(
    bundle: ModelBundle,
    seeds: list[int],
    kind: str = "consistent",
    motion_frames: int | None = None,
    steps: int | None = None,
    cfg: float | None = None,
    shift: float | None = None,
    noise_seed: int = 0,
) -> FirstClipReport:
    from svi.plan import MAX_CFG, MAX_SHIFT, MAX_STEPS, _float, _int
    from svi.world import WorldConfig, render_episode

    p = bundle.preset  # its sampler numbers where None; given ones checked as generate's
    steps = _int("--steps", p.steps if steps is None else steps, 1, MAX_STEPS)
    shift = _float("--shift", p.shift if shift is None else shift, 0.0, MAX_SHIFT, open_low=True)
    cfg = _float("--cfg", p.cfg if cfg is None else cfg, 0.0, MAX_CFG)
    m = motion_frames or p.motion_frames
    f = p.num_frames
    eps = [render_episode(kind, s, f, WorldConfig(size=p.height)) for s in seeds]
    frames = np.stack([e.frames[:f] for e in eps])  # (B, F, H, W, 3)
    video = to_signed(frames).movedim(1, 2)  # (B, 3, F, H, W)
    y = build_y(bundle.codec, video[:, :, :m], f, padding=p.padding, mask=p.mask,
                anchor=video[:, :, 0])  # fmt: skip
    text = bundle.text_encoder.encode([e.prompts[0] for e in eps])
    neg = bundle.text_encoder.encode([p.negative_prompt] * len(eps))
    noise = clip_noise((len(eps), *bundle.latent_shape), noise_seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        lat = sample_latents(bundle.experts, noise, y, text, neg, steps=steps, shift=shift,
                             cfg=cfg)  # fmt: skip
        gen = to_uint8(bundle.codec.decode(lat))[:, m:]  # (B, F-M, H, W, 3)
    per_clip = (time.perf_counter() - t0) / len(eps)
    copy = np.repeat(frames[:, m - 1 : m], f - m, axis=1)
    truth = [(e.truth, slice(m, f)) for e in eps]
    return FirstClipReport(
        scenes=len(eps),
        background_psnr=_mean(metrics.background_psnr(g, t.background[s], t.masks[s])
                              for g, (t, s) in zip(gen, truth, strict=True)),
        presence=_presence(gen, truth),
        presence_per_frame=[_presence(gen[:, i : i + 1], [(t, slice(m + i, m + i + 1))
                            for t, _ in truth]) for i in range(f - m)],
        mse=_mean(metrics.mse(g, fr[m:]) for g, fr in zip(gen, frames, strict=True)),
        copy_mse=_mean(metrics.mse(c, fr[m:]) for c, fr in zip(copy, frames, strict=True)),
        copy_presence=_presence(copy, truth),
        copy_background_psnr=_mean(metrics.background_psnr(c, t.background[s], t.masks[s])
                                   for c, (t, s) in zip(copy, truth, strict=True)),
        seconds_per_clip=per_clip,
    )  # fmt: skip


def _mean(values) -> float:
    return float(np.mean([v for v in values if np.isfinite(v)]))


def _presence(gen: np.ndarray, truth) -> float:
    counts = [metrics.presence_counts(g, t.masks[s], t.colours[s], t.present[s])
              for g, (t, s) in zip(gen, truth, strict=True)]  # fmt: skip
    return sum(c[0] for c in counts) / max(sum(c[1] for c in counts), 1)
