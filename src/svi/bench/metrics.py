"""Weight-free video metrics against the world's exact ground truth.

All frames are uint8 (T, H, W, 3). Metrics are location-aware: an object counts as
present in a frame only if its colour appears inside its TRUE mask (ground-truth
position in that frame) - colour anywhere in the frame is fooled by fragments.
"""

from __future__ import annotations

import numpy as np

from svi.pixels import colour_drift, grey  # noqa: F401 - part of this module's API

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


# -- drift metrics v2 (svi bench drift / svi bench video) ------------------------------
# Every metric is a plain difference or a share on a fixed scale: none is a ratio over a
# reference that can approach zero (the v1 sharpness ratio spiked to ~150 that way).
# ``REFERENCE_FLOOR`` is the smallest truth change an event check relies on.

BLOB_TOLERANCE = 80.0  # RGB distance of a blob's pixels to the object colour (after denoise)
BLOB_CONTRAST_SHARE = 0.8  # ... and at most this share of the colour's true contrast
AREA_FACTOR = 2.5  # a blob is an object when its area is within this factor of the truth's
MIN_OBJECT_AREA = 6  # objects showing fewer true pixels are not scored (mostly off-frame)
REFERENCE_FLOOR = 1e-3  # smaller truth changes (luminance, 0..1) are not scored


def denoise(frame: np.ndarray) -> np.ndarray:
    """3x3 median per channel: removes isolated noisy pixels inside an object, keeps
    edges, and keeps a speckle of isolated dots a speckle."""
    from scipy import ndimage

    return ndimage.median_filter(frame, size=(3, 3, 1), mode="nearest")


def blob_tolerance(colour: np.ndarray, background: np.ndarray) -> float:
    """How far (RGB) a pixel may be from an object's ``colour`` and still be the object:
    ``BLOB_TOLERANCE``, but at most ``BLOB_CONTRAST_SHARE`` of the colour's distance to
    the nearest pixel of the true ``background`` (H, W, 3) of that frame. Objects keep at
    least 100 of contrast in full light (``svi.world.palette.MIN_CONTRAST``), so this
    only tightens when the lights dim: at level 0.45 every colour in the frame is 0.45x
    as far apart, and a fixed tolerance would merge the object with its background (the
    truth itself would not be found) and accept any muted patch as the object."""
    pixels = _f(background).reshape(-1, 3)
    if not len(pixels):
        return BLOB_TOLERANCE
    contrast = float(np.linalg.norm(pixels - _f(colour), axis=-1).min())
    return min(BLOB_TOLERANCE, BLOB_CONTRAST_SHARE * contrast)


def colour_blobs(
    frame: np.ndarray,
    colour: np.ndarray,
    others: np.ndarray | None = None,
    tolerance: float = BLOB_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Connected (4-neighbour) regions of ``frame`` (H, W, 3) whose pixels are within
    ``tolerance`` (:func:`blob_tolerance`) of ``colour`` (3,) and no nearer any of
    ``others`` (n, 3) (the scene's other object colours): a label image (H, W) (0 =
    none) and the area of each label 1..n."""
    from scipy import ndimage

    d = np.linalg.norm(_f(frame) - _f(colour), axis=-1)
    close = d < tolerance
    for other in [] if others is None else others:
        close &= d <= np.linalg.norm(_f(frame) - _f(other), axis=-1)
    labels, n = ndimage.label(close)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, areas


def sized_blob_count(
    frame: np.ndarray,
    colour: np.ndarray,
    area: float,
    background: np.ndarray,
    others: np.ndarray | None = None,
) -> int:
    """How many connected blobs of ``colour`` the :func:`denoise`-d ``frame`` has whose
    area is within ``AREA_FACTOR`` of ``area``; ``background`` (the true one of that
    frame) sets the colour tolerance (:func:`blob_tolerance`)."""
    _, areas = _frame_blobs(frame, colour, background, others)
    return len(_sized(areas, area))


def object_found(
    frame: np.ndarray,
    colour: np.ndarray,
    area: float,
    background: np.ndarray,
    mask: np.ndarray | None = None,
    others: np.ndarray | None = None,
    copies: int = 1,
) -> bool:
    """Is the object there, ONCE: a connected blob of ``colour`` in the
    :func:`denoise`-d ``frame`` whose area is within ``AREA_FACTOR`` of ``area``, and no
    more such blobs than the truth has objects of that colour (``copies``)? Fragments
    (speckle) are too small, same-coloured background too large, and a patchwork that
    repeats the scene's colours (a collapsed video's frozen patch mosaic) or a
    duplicated object has too many. ``background`` (the true one of that frame) sets
    the colour tolerance (:func:`blob_tolerance`). With ``mask`` (the object's true
    pixels) a blob must also cover ``PRESENCE_FRACTION`` of it (location-aware)."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    labels, areas = _frame_blobs(frame, colour, background, others)
    return _one_object(labels, areas, area, mask, copies)


def _frame_blobs(
    frame: np.ndarray, colour: np.ndarray, background: np.ndarray, others: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`colour_blobs` of one raw frame: denoised, at the colour's tolerance."""
    return colour_blobs(denoise(frame), colour, others, blob_tolerance(colour, background))


def _sized(areas: np.ndarray, area: float) -> np.ndarray:
    """Indices of the blobs whose area is within ``AREA_FACTOR`` of ``area``."""
    return np.flatnonzero((areas >= area / AREA_FACTOR) & (areas <= area * AREA_FACTOR))


def _one_object(
    labels: np.ndarray, areas: np.ndarray, area: float, mask: np.ndarray | None, copies: int
) -> bool:
    """The test of :func:`object_found` on blobs already labelled."""
    ok = _sized(areas, area)
    if not 1 <= len(ok) <= copies:
        return False
    if mask is None:
        return True
    need = PRESENCE_FRACTION * max(int(mask.sum()), 1)
    return any((labels[mask] == i + 1).sum() >= need for i in ok)


def truth_context(
    colours: np.ndarray, areas: np.ndarray, colour: np.ndarray
) -> tuple[np.ndarray, int]:
    """How to look for ``colour`` in a frame whose truth has objects of ``colours``
    (K, 3) showing ``areas`` (K,) pixels: the other visible colours (a pixel nearer one
    of them is not this object; under dim or bright light two object colours can come
    within the tolerance of each other) and how many objects of exactly this colour are
    big enough to be found (the copies allowed, at least 1)."""
    same = (np.asarray(colours) == np.asarray(colour)).all(axis=-1)
    others = np.asarray(colours)[(areas > 0) & ~same]
    return others, max(1, int((same & (areas >= MIN_OBJECT_AREA)).sum()))


def identity_counts(
    frames: np.ndarray, colours: np.ndarray, masks: np.ndarray, background: np.ndarray
) -> tuple[int, int, int]:
    """(found, found where the truth has it, scored) (frame, object) pairs of
    :func:`object_found` against the truth; each frame is denoised and each object's
    blobs labelled once for both counts.

    ``colours`` (T, K, 3), ``masks`` (T, K, H, W) and ``background`` (T, H, W, 3) are
    the truth at the same frames; an object is scored where it shows at least
    ``MIN_OBJECT_AREA`` true pixels, with its true visible area as the reference, its
    contrast to the background as the colour tolerance (:func:`blob_tolerance`) and the
    objects of its colour as the copies allowed (:func:`truth_context`); pixels nearer
    another visible object's colour belong to that object. The first count ignores
    where the blob is (long rollouts legitimately diverge from the true trajectories);
    the second needs the blob on the object's true mask."""
    found = located = scored = 0
    areas = masks.sum(axis=(2, 3))  # (T, K)
    for t in range(len(frames)):
        clean = denoise(frames[t])
        for k in np.flatnonzero(areas[t] >= MIN_OBJECT_AREA):
            scored += 1
            others, copies = truth_context(colours[t], areas[t], colours[t, k])
            tol = blob_tolerance(colours[t, k], background[t])
            labels, blob_areas = colour_blobs(clean, colours[t, k], others, tol)
            found += _one_object(labels, blob_areas, areas[t, k], None, copies)
            located += _one_object(labels, blob_areas, areas[t, k], masks[t, k], copies)
    return found, located, scored


def grid_energy(frames: np.ndarray, period: int) -> float:
    """Patch-grid artefact energy: mean squared luminance step across the lines of a
    ``period``-pixel grid minus the mean squared step everywhere else (0 = no grid;
    a blocky video is positive). A plain difference, so a sharper video never scores
    better merely for having stronger edges."""
    g = grey(frames)
    excess = []
    for axis in (1, 2):
        step = np.diff(g, axis=axis) ** 2  # step between pixel j and j + 1
        on_line = (np.arange(step.shape[axis]) + 1) % period == 0
        if not on_line.any() or on_line.all():
            continue
        take = np.take(step, np.flatnonzero(on_line), axis=axis)
        rest = np.take(step, np.flatnonzero(~on_line), axis=axis)
        excess.append(float(take.mean() - rest.mean()))
    return float(np.mean(excess)) if excess else float("nan")


def seam_jump(before: np.ndarray, after: np.ndarray, within: float) -> float:
    """Change across a clip boundary (last kept frame ``before`` -> first new frame
    ``after``) minus the typical within-clip change ``within``: 0 = seamless."""
    return motion_energy(np.stack([before, after])) - within


def flicker(frames: np.ndarray) -> float:
    """Mean |second temporal difference| of the frames' mean colour (0..1): steady or
    steadily changing brightness scores 0, brightness that jumps back and forth scores
    high. Needs 3 frames (NaN otherwise)."""
    if len(frames) < 3:
        return float("nan")
    mean = _f(frames).reshape(len(frames), -1, 3).mean(1) / 255.0  # (T, 3)
    return float(np.abs(np.diff(mean, n=2, axis=0)).mean())
