"""Drift of long rollouts on held-out world scenes, per clip, against ground truth.

For each validation scene the model starts from the scene's first real frames and
prompt and generates N clips through :func:`svi.pipeline.rollout` (the same loop as
``svi generate``). Per clip k we score the clip's new frames:

- ``background_error``: median |frame - true background| off the true objects;
- ``colour_drift``: distance of the clip's mean colour to the true frames' (0..1);
- ``survival``: share of the scene's objects whose colour still covers 30 % of their
  area somewhere (trajectories may diverge; identities should not vanish);
- ``sharpness``: Laplacian variance relative to the true frames' (1 = as crisp);
- ``motion``: mean frame-to-frame change (0 = frozen; copying the start scores 0);
- ``seam``: change across the clip boundary relative to the within-clip change.

Curves are averaged over scenes; the report holds first clip, last clip and slope.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from svi.bench import metrics
from svi.pipeline import GenerationConfig, SVIPipeline, rollout

log = logging.getLogger(__name__)

METRICS = ("background_error", "colour_drift", "survival", "sharpness", "motion", "seam")


@dataclass
class DriftCurves:
    name: str
    clips: int
    scenes: int
    curves: dict[str, list[float]]  # metric -> per-clip mean over scenes
    per_scene_last: dict[str, list[float]]  # metric -> last-clip value per scene

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for m, ys in self.curves.items():
            arr = np.asarray(ys, dtype=float)
            k = np.arange(len(arr))
            ok = np.isfinite(arr)
            slope = float(np.polyfit(k[ok], arr[ok], 1)[0]) if ok.sum() > 1 else float("nan")
            out[m] = {"first": float(arr[0]), "last": float(arr[-1]), "slope_per_clip": slope}
        return out


def _clip_scores(new: np.ndarray, prev_last: np.ndarray | None, truth, span: slice) -> dict:
    bg = truth.background[span][: len(new)]
    masks = truth.masks[span][: len(new)]
    true_frames = truth.frames_like[span][: len(new)]
    first = truth.first_colours
    within = metrics.motion_energy(new)
    seam = float("nan")
    if prev_last is not None and within > 0:
        seam = metrics.motion_energy(np.stack([prev_last, new[0]])) / within
    return {
        "background_error": metrics.robust_background_error(new, bg, masks),
        "colour_drift": metrics.colour_drift(new, true_frames),
        "survival": metrics.object_survival(new, first["colours"], first["areas"]),
        "sharpness": metrics.sharpness(new) / max(metrics.sharpness(true_frames), 1e-9),
        "motion": within,
        "seam": seam,
    }


class _Truth:
    """Ground truth of a scene long enough for the rollout, with the first-frame objects."""

    def __init__(self, episode) -> None:
        t = episode.truth
        self.background, self.masks, self.frames_like = t.background, t.masks, episode.frames
        seen = metrics.visible(t.masks[0], t.present[0])
        self.first_colours = {
            "colours": t.colours[0][seen],
            "areas": t.masks[0].sum(axis=(1, 2))[seen].astype(np.float32),
        }


def drift_curves(
    pipe: SVIPipeline,
    seeds: list[int],
    clips: int,
    *,
    name: str,
    kind: str = "consistent",
    config: GenerationConfig | None = None,
) -> DriftCurves:
    """Roll out ``clips`` clips from each scene and score every clip (see module doc)."""
    from svi.world import WorldConfig, render_episode

    p = pipe.bundle.preset
    config = config or GenerationConfig()
    m = pipe.motion_frames_for(config, ["x"])
    total = clips * (p.num_frames - m) + m
    per_clip: dict[str, list[list[float]]] = {k: [] for k in METRICS}
    for i, seed in enumerate(seeds):
        ep = render_episode(kind, seed, total, WorldConfig(size=p.height))
        truth = _Truth(ep)
        cfg = GenerationConfig(**{**config.to_dict(), "clips": clips, "seed": config.seed + i})
        _, out = rollout(pipe, ep.frames[: p.motion_frames], [ep.prompt], cfg)
        pos, prev = 0, None
        rows = []
        for clip in out:
            new = clip.new_frames
            rows.append(_clip_scores(new, prev, truth, slice(pos, pos + len(new))))
            pos += len(new)
            prev = new[-1]
        for key in METRICS:
            per_clip[key].append([r[key] for r in rows])
        log.info("%s: scene %d/%d done", name, i + 1, len(seeds))
    with warnings.catch_warnings():  # the seam of clip 1 is undefined (NaN) everywhere
        warnings.simplefilter("ignore", RuntimeWarning)
        curves = {k: np.nanmean(np.asarray(v, float), axis=0).tolist() for k, v in per_clip.items()}
    last = {k: [row[-1] for row in v] for k, v in per_clip.items()}
    return DriftCurves(name, clips, len(seeds), curves, last)


def plot_drift(results: list[DriftCurves], path) -> None:
    """One panel per metric, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, metric in zip(axes.flat, METRICS, strict=True):
        for r in results:
            ax.plot(np.arange(1, r.clips + 1), r.curves[metric], label=r.name)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("clip")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(
    model: str | None,
    variants: dict[str, tuple[str | None, float]],
    seeds: list[int],
    clips: int,
    kind: str = "consistent",
    config: GenerationConfig | None = None,
) -> list[DriftCurves]:
    """Drift curves of the base model with each LoRA variant (label -> (path, scale))."""
    results = []
    for label, (lora, scale) in variants.items():
        pipe = SVIPipeline.from_pretrained(model)
        if lora is not None:
            pipe.load_lora(lora, scale)
        results.append(drift_curves(pipe, seeds, clips, name=label, kind=kind, config=config))
    return results


def markdown_table(results: list[DriftCurves]) -> str:
    """First clip -> last clip for every metric and variant."""
    head = "| variant | " + " | ".join(m.replace("_", " ") for m in METRICS) + " |"
    rows = [head, "|" + " --- |" * (len(METRICS) + 1)]
    for r in results:
        s = r.summary()
        cells = [f"{s[m]['first']:.3f} -> {s[m]['last']:.3f}" for m in METRICS]
        rows.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
