"""Weight-free video metrics against the world's exact ground truth.

All frames are uint8 (T, H, W, 3). Metrics are location-aware: an object counts as
present in a frame only if its colour appears inside its TRUE mask (ground-truth
position in that frame) - colour anywhere in the frame is fooled by fragments.
"""

from __future__ import annotations

import numpy as np

COLOUR_TOLERANCE = 60.0  # Euclidean RGB distance that still counts as the object's colour
PRESENCE_FRACTION = 0.3  # share of the true mask that must carry the colour


def _f(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images, optionally over a boolean pixel mask (..., H, W)."""
    err = (_f(a) - _f(b)) ** 2
    if where is not None:
        err = err[np.broadcast_to(where[..., None], err.shape)]
    mse = float(err.mean()) if err.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def background_region(masks: np.ndarray, margin: int = 1) -> np.ndarray:
    """(T, H, W) pixels covered by no object, shrunk by ``margin`` px around objects."""
    covered = masks.any(axis=1)  # (T, H, W)
    for _ in range(margin):
        grown = covered.copy()
        grown[:, 1:] |= covered[:, :-1]
        grown[:, :-1] |= covered[:, 1:]
        grown[:, :, 1:] |= covered[:, :, :-1]
        grown[:, :, :-1] |= covered[:, :, 1:]
        covered = grown
    return ~covered


def background_psnr(frames: np.ndarray, background: np.ndarray, masks: np.ndarray) -> float:
    """PSNR of the generated frames against the object-free truth, off the objects."""
    return psnr(frames, background, background_region(masks))


def object_presence(
    frames: np.ndarray, masks: np.ndarray, colours: np.ndarray, present: np.ndarray
) -> np.ndarray:
    """(T, K) bool: object k's colour covers >= 30 % of its true mask in frame t.

    Entries where the object is absent or fully hidden are False; select them out
    with :func:`presence_rate`.
    """
    dist = np.linalg.norm(_f(frames)[:, None] - _f(colours)[:, :, None, None], axis=-1)  # (T,K,H,W)
    hit = (dist < COLOUR_TOLERANCE) & masks
    area = masks.sum(axis=(2, 3))
    frac = hit.sum(axis=(2, 3)) / np.maximum(area, 1)
    return (frac >= PRESENCE_FRACTION) & present & (area > 0)


def visible(masks: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(T, K) bool: object k is in frame t with at least one pixel showing."""
    return present & (masks.sum(axis=(-2, -1)) > 0)


def presence_counts(
    frames: np.ndarray, masks: np.ndarray, colours: np.ndarray, present: np.ndarray
) -> tuple[int, int]:
    """(found, visible) counts of (frame, object) pairs, for pooling over scenes."""
    seen = visible(masks, present)
    found = object_presence(frames, masks, colours, present)
    return int(found[seen].sum()), int(seen.sum())


def presence_rate(
    frames: np.ndarray, masks: np.ndarray, colours: np.ndarray, present: np.ndarray
) -> float:
    """Share of visible (frame, object) pairs that :func:`object_presence` finds."""
    found, total = presence_counts(frames, masks, colours, present)
    return found / total if total else float("nan")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of uint8 images on the [0, 1] scale."""
    return float(((_f(a) - _f(b)) / 255.0).__pow__(2).mean())


def colour_drift(frames: np.ndarray, reference: np.ndarray) -> float:
    """Distance of the mean colour of ``frames`` to that of ``reference`` (0..1 scale)."""
    a = _f(frames).reshape(-1, 3).mean(0) / 255.0
    b = _f(reference).reshape(-1, 3).mean(0) / 255.0
    return float(np.linalg.norm(a - b))


def motion_energy(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame change (0..1): 0 means a frozen video."""
    if len(frames) < 2:
        return 0.0
    return float(np.abs(np.diff(_f(frames), axis=0)).mean() / 255.0)


def robust_background_error(frames: np.ndarray, background: np.ndarray, masks: np.ndarray) -> float:
    """Median |frame - true background| (0..1) off the true objects.

    The median ignores a minority of pixels (objects that wandered elsewhere in a long
    rollout), so it measures whether the background itself has drifted.
    """
    region = np.broadcast_to(background_region(masks)[..., None], frames.shape)
    err = np.abs(_f(frames) - _f(background))[region]
    return float(np.median(err) / 255.0) if err.size else float("nan")


def object_survival(frames: np.ndarray, colours: np.ndarray, areas: np.ndarray) -> float:
    """Share of objects whose colour still covers >= 30 % of their true area anywhere.

    ``colours`` (K, 3) and ``areas`` (K,) describe the objects of the scene; position is
    ignored because long rollouts legitimately diverge from the true trajectories.
    """
    if len(colours) == 0:
        return float("nan")
    dist = np.linalg.norm(_f(frames)[:, None] - _f(colours)[None, :, None, None], axis=-1)
    count = (dist < COLOUR_TOLERANCE).sum(axis=(2, 3))  # (T, K)
    return float((count >= PRESENCE_FRACTION * np.maximum(areas, 1)[None]).mean())


def sharpness(frames: np.ndarray) -> float:
    """Mean variance of the 4-neighbour Laplacian of the grey frames (0..1 scale)."""
    g = _f(frames).mean(-1) / 255.0
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return float(lap.var(axis=(1, 2)).mean())
