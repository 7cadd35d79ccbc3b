"""Are the recycled errors the errors the model meets at generation time?

ERFT adds errors from its replay memory to the conditioning image (``y[:, 4:, :k]``,
drawn from the video bank pooled over all bins) and to the clean latent (bin of the
step's sigma). At generation time the conditioning frames carry the model's own
errors from the previous clip. This module measures both on the same scale (pixels in
[-1, 1]; for the world model the latent IS the pixel) so they can be compared:

- **bank**: per bin and pooled, the RMS of the stored video errors and of their first
  ``k`` frames (the image error), the share of their energy per spatial-frequency band,
  and the mean per channel (a colour bias);
- **rollout**: per clip index, the error of the M carried frames (what conditions the
  next clip) against the true frames at the same times - over the whole frame, and
  over the true background only (robust to objects leaving their true paths) - with
  the same band shares and channel means.

Bands (radial frequency in cycles per pixel): low < 1/8 (periods > 8 px), mid 1/8-1/4,
high >= 1/4 (periods <= 4 px: the world model's patch grid and finer).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from svi.errors import SviError

log = logging.getLogger(__name__)

BANDS = (("low", 0.0, 0.125), ("mid", 0.125, 0.25), ("high", 0.25, 1.0))


def band_shares(err: np.ndarray) -> dict[str, float]:
    """Share of the energy of ``err`` (..., H, W) per radial frequency band (sums to 1)."""
    h, w = err.shape[-2:]
    power = np.abs(np.fft.fft2(err - err.mean(axis=(-2, -1), keepdims=True))) ** 2
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    total = power.sum()
    if total <= 0:
        return {name: float("nan") for name, _, _ in BANDS}
    return {name: float(power[..., (radius >= lo) & (radius < hi)].sum() / total)
            for name, lo, hi in BANDS}  # fmt: skip


def describe(err: np.ndarray) -> dict:
    """RMS, band shares and per-channel mean of errors (N, C, F, H, W) or (N, C, H, W)."""
    e = np.asarray(err, dtype=np.float32)
    channel_mean = e.mean(axis=tuple(i for i in range(e.ndim) if i != 1))
    return {"rms": float(np.sqrt((e**2).mean())), **band_shares(e),
            "channel_mean": [float(c) for c in channel_mean], "n": int(e.shape[0])}  # fmt: skip


def bank_errors(checkpoint: Path, kind: str = "video") -> tuple[np.ndarray, list[np.ndarray]]:
    """(bin sigmas, per-bin stored errors (n, C, F, h, w) float32) of a training checkpoint
    folder (``RUN/checkpoints/step-N``, banks in ``extra.safetensors``)."""
    from safetensors.torch import load_file

    path = Path(checkpoint) / "extra.safetensors"
    if not path.is_file():
        raise SviError(f"no banks at {path} (an ERFT run's checkpoint folder is needed)")
    t = load_file(str(path))
    prefix = f"bank.{kind}."
    if prefix + "bin_sigmas" not in t:
        raise SviError(f"{path} holds no {kind} bank")
    sigmas = t[prefix + "bin_sigmas"].numpy()
    c, f, h, w = (int(x) for x in t[prefix + "shape"].tolist())
    bins = []
    for b in range(len(sigmas)):
        entries = t.get(f"{prefix}bin.{b}")
        if entries is None:
            bins.append(np.zeros((0, c, f, h, w), np.float32))
            continue
        pool = round((c * f * h * w / entries.shape[1]) ** 0.5)  # spatial_pool
        flat = entries.float().numpy().reshape(len(entries), c, f, h // pool, w // pool)
        bins.append(flat.repeat(pool, axis=-2).repeat(pool, axis=-1))
    return sigmas, bins


def bank_table(checkpoint: Path, image_frames: int = 3) -> dict:
    """Stats of every bin (latent error) and of the pooled image error (first k frames)."""
    sigmas, bins = bank_errors(checkpoint)
    rows = [{"sigma": float(s), **describe(e)} for s, e in zip(sigmas, bins, strict=True)
            if e.size]  # fmt: skip
    filled = [e for e in bins if e.size]
    if not filled:
        raise SviError(f"the banks of {checkpoint} are empty")
    pooled = np.concatenate(filled)[:, :, :image_frames]
    return {"bins": rows, "image_error": describe(pooled), "image_frames": image_frames}


def rollout_table(pipe, seeds: list[int], clips: int, config, kind: str = "consistent") -> dict:
    """Carried-frame errors of real rollouts per clip, against the truth."""
    from dataclasses import replace

    from svi.bench.metrics import background_region
    from svi.bench.runner import render_scene
    from svi.pixels import to_signed

    p = pipe.bundle.preset
    m = pipe.plan(config, ["a"]).carried_frames
    per_clip: list[list[np.ndarray]] = [[] for _ in range(clips)]
    per_clip_bg: list[list[np.ndarray]] = [[] for _ in range(clips)]
    per_clip_n: list[int] = [0] * clips  # background values (pixels x channels) per clip
    for seed in seeds:
        ep = render_scene(kind, seed, clips, p.num_frames, p.height, m)
        plan = pipe.plan(replace(config, clips=clips, seed=seed), [ep.prompt])
        for clip in pipe.generate(ep.frames[:m], [ep.prompt], plan):
            end = (clip.index + 1) * (p.num_frames - m) + m  # carried = frames [end-m, end)
            carried = to_signed(clip.carry.frames).numpy()  # (M, 3, H, W)
            truth = to_signed(ep.frames[end - m : end]).numpy()
            err = carried - truth
            per_clip[clip.index].append(err)
            bg = background_region(ep.truth.masks[end - m : end])[:, None]  # (M, 1, H, W)
            per_clip_bg[clip.index].append(np.where(bg, err, 0.0))
            per_clip_n[clip.index] += int(bg.sum()) * err.shape[1]
    rows = []
    for k in range(clips):
        e = np.stack(per_clip[k]).transpose(0, 2, 1, 3, 4)  # (scenes, 3, M, H, W)
        b = np.stack(per_clip_bg[k]).transpose(0, 2, 1, 3, 4)
        row = {"clip": k + 1, **describe(e)}
        # over every background value - an exact one counts too (it used to be left out)
        row["background_rms"] = float(np.sqrt((b**2).sum() / max(per_clip_n[k], 1)))
        rows.append(row)
    return {"clips": rows, "motion_frames": m, "scenes": len(seeds), "kind": kind}


def markdown(bank: dict, rollout: dict) -> str:
    """The side-by-side table of the bank and the rollouts."""
    head = "| source | RMS | low | mid | high | channel mean (R, G, B) |"
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]

    def row(name: str, d: dict) -> str:
        ch = ", ".join(f"{c:+.3f}" for c in d["channel_mean"])
        return (f"| {name} | {d['rms']:.3f} | {d['low']:.2f} | {d['mid']:.2f} | "
                f"{d['high']:.2f} | {ch} |")  # fmt: skip

    lines.append(row(f"bank image error (first {bank['image_frames']} frames, pooled)",
                     bank["image_error"]))  # fmt: skip
    for b in bank["bins"][:: max(1, len(bank["bins"]) // 5)]:
        lines.append(row(f"bank video error, sigma {b['sigma']:.3f} (n={b['n']})", b))
    for c in rollout["clips"]:
        if c["clip"] in (1, 2, 3, 5, 10, 20, 50, 100, 200) or c["clip"] == len(rollout["clips"]):
            label = f"rollout carried frames, clip {c['clip']} (bg RMS {c['background_rms']:.3f})"
            lines.append(row(label, c))
    return "\n".join(lines) + "\n"


def plot(bank: dict, rollout: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    sig = [r["sigma"] for r in bank["bins"]]
    a.plot(sig, [r["rms"] for r in bank["bins"]], "o-", label="bank video error (per bin)")
    a.axhline(bank["image_error"]["rms"], color="C1", ls="--", label="bank image error (pooled)")
    a.set_xlabel("bin sigma")
    a.set_ylabel("RMS ([-1, 1] pixels)")
    a.legend(fontsize=8)
    k = [r["clip"] for r in rollout["clips"]]
    b.plot(k, [r["rms"] for r in rollout["clips"]], label="carried frames vs truth")
    b.plot(k, [r["background_rms"] for r in rollout["clips"]], label="same, background only")
    b.axhline(bank["image_error"]["rms"], color="C1", ls="--", label="bank image error")
    b.set_xlabel("clip")
    b.legend(fontsize=8)
    b.set_title("errors met at generation time", fontsize=9)
    a.set_title("errors recycled in training", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
