"""Weight-free metrics for conditioned videos: talking (audio) and dancing (skeleton).

All frames are uint8 (T, H, W, 3); pixel (row i, column j) has its centre at
(x, y) = (j + 0.5, i + 0.5), as in :mod:`svi.world.shapes`. Every function returns
finite numbers (or ``inf`` PSNR for identical frames), never NaN: degenerate inputs
(a frozen video, no mouth or figure found) get a documented fallback value.

- Talking: :func:`mouth_opening` measures the mouth from the pixels alone;
  :func:`sync_scores` (a Sync-C analogue) and :func:`sync_lag` compare it with the
  driving audio envelope.
- Dancing: :func:`pose_error` compares the figure's pixels with the driving skeleton.
- Both: :func:`psnr_ssim` against the world's true frames, :func:`clip_means` per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from svi.world.dancing import figure_mask
from svi.world.talking import MOUTH_GAMMA

MOUTH_TOLERANCE = 60.0  # Euclidean RGB distance that still counts as the mouth colour
FACE_TOLERANCE = 60.0  # ... as the face colour
FIGURE_TOLERANCE = 60.0  # ... as the stick figure's colour
FLAT_STD = 1e-6  # an opening (px) whose standard deviation is below this is constant
QUIET_STD = 0.01  # a target (envelope ** gamma, 0..1) whose std is below this is silent
MAX_LAG = 4  # frames searched either way by :func:`sync_lag`
MIN_OVERLAP = 4  # fewest frames a lagged correlation is computed on
SSIM_WINDOW = 7  # side of the uniform SSIM window (px)
SSIM_K1, SSIM_K2 = 0.01, 0.03  # SSIM constants: C1 = (K1 * 255)^2, C2 = (K2 * 255)^2
PEAK = 255.0  # uint8 dynamic range


def _f(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


def _near(frames: np.ndarray, rgb: np.ndarray, tolerance: float) -> np.ndarray:
    """(T, H, W) pixels within ``tolerance`` (Euclidean RGB) of ``rgb`` (3,)."""
    diff = _f(frames) - _f(rgb).reshape(3)
    return (diff * diff).sum(axis=-1) <= tolerance * tolerance


def _filled_span(mask: np.ndarray) -> np.ndarray:
    """(T, H, W) pixels between the first and last ``mask`` pixel of both their row
    and their column (an orthogonally convex hull: fills a disc's eyes and mouth even
    when its rim has gaps)."""

    def between(axis: int) -> np.ndarray:
        forward = np.logical_or.accumulate(mask, axis=axis)
        backward = np.flip(np.logical_or.accumulate(np.flip(mask, axis), axis=axis), axis)
        return forward & backward

    return between(1) & between(2)


# -- talking -----------------------------------------------------------------------------


def mouth_opening(
    frames: np.ndarray, mouth_rgb: np.ndarray, face_rgb: np.ndarray | None = None
) -> np.ndarray:
    """(T,) float32 mouth opening in px, measured from the frames alone.

    Mouth pixels are those within ``MOUTH_TOLERANCE`` of ``mouth_rgb``; with
    ``face_rgb`` only those inside the lower half of the face (the :func:`_filled_span`
    of the pixels within ``FACE_TOLERANCE`` of ``face_rgb``, from its centre row down)
    count: the world's mouth lies below the face centre and its eyes above, and a
    blurred eye edge on an orange face is within tolerance of the mouth colour.
    Connected regions (8-neighbour) touching the frame border are dropped (a maroon
    background is 25 RGB from the mouth colour) and the largest remaining region is
    the mouth.
    The opening is its area divided by its width (columns it covers): the mean height
    of its columns, pi/2 times the half-height of an ellipse, so it grows linearly with
    the world's ``mouth_open``. A frame without a mouth gives 0.
    """
    candidate = _near(frames, mouth_rgb, MOUTH_TOLERANCE)
    if face_rgb is not None:
        face = _filled_span(_near(frames, face_rgb, FACE_TOLERANCE))
        rows = np.arange(face.shape[1], dtype=np.float64)[None, :, None]
        area = face.sum(axis=(1, 2), keepdims=True)
        centre = (face * rows).sum(axis=(1, 2), keepdims=True) / np.maximum(area, 1)
        candidate &= face & (rows >= centre)
    opening = np.zeros(len(frames), np.float32)
    structure = np.ones((3, 3), bool)
    for t, mask in enumerate(candidate):
        labels, n = ndimage.label(mask, structure=structure)
        if n == 0:
            continue
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        areas[0] = 0
        areas[border] = 0
        best = int(areas.argmax())
        if areas[best] == 0:
            continue
        width = int((labels == best).any(axis=0).sum())
        opening[t] = areas[best] / width
    return opening


def _pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    """(Pearson correlation of opening ``a`` with target ``b``, degenerate): 0 and True
    when ``a`` is constant (std < ``FLAT_STD``), ``b`` is silent (std < ``QUIET_STD``)
    or they are shorter than 2 frames."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() < FLAT_STD or b.std() < QUIET_STD:
        return 0.0, True
    a, b = a - a.mean(), b - b.mean()
    r = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    return float(np.clip(r, -1.0, 1.0)), False


@dataclass
class SyncScores:
    """Correlations of the mouth opening with the (gamma-mapped) audio envelope."""

    overall: float  # over the whole video
    overall_degenerate: bool  # the opening is constant or the target silent over the video
    clips: np.ndarray  # (K,) float64 per clip, 0 where degenerate
    degenerate: np.ndarray  # (K,) bool: the clip's opening is constant or target silent


def sync_scores(
    opening: np.ndarray,
    envelope: np.ndarray,
    clip_frames: int,
    gamma: float = MOUTH_GAMMA,
) -> SyncScores:
    """Pearson correlation of ``opening`` (T,) with ``envelope ** gamma`` (T,), overall
    and per clip of ``clip_frames`` frames (clip k = frames [k * clip_frames, (k + 1) *
    clip_frames); the last one may be shorter).

    The world draws ``mouth_open = envelope ** MOUTH_GAMMA`` and :func:`mouth_opening`
    is affine in ``mouth_open``, so ``gamma=MOUTH_GAMMA`` makes the perfect video
    score ~1 (``gamma=1`` correlates with the raw envelope; the difference is a few
    hundredths). A clip (or video) whose opening is constant (a frozen mouth) or whose
    target barely moves (std < ``QUIET_STD``: silence, where the envelope is a noise
    floor of ~0.03 and the correlation would score sub-pixel jitter) gets 0 and a
    ``degenerate`` flag, never NaN; average ``clips[~degenerate]``.
    """
    opening, target = _lengths(opening, envelope, gamma)
    overall, overall_flat = _pearson(opening, target)
    scores = [
        _pearson(opening[s : s + clip_frames], target[s : s + clip_frames])
        for s in range(0, len(opening), clip_frames)
    ]
    return SyncScores(
        overall,
        overall_flat,
        np.array([r for r, _ in scores], np.float64),
        np.array([flat for _, flat in scores], bool),
    )


def silent(envelope: np.ndarray, gamma: float = MOUTH_GAMMA) -> bool:
    """Does the target (``envelope ** gamma``) barely move (std < ``QUIET_STD``)? Then no
    mouth can be scored against it; otherwise a constant mouth simply failed to follow."""
    target = _target(envelope, gamma)
    return len(target) < 2 or float(target.std()) < QUIET_STD


def _lengths(
    opening: np.ndarray, envelope: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    opening, target = np.asarray(opening, np.float64), _target(envelope, gamma)
    if opening.shape != target.shape or opening.ndim != 1:
        raise ValueError(f"opening {opening.shape} and envelope {target.shape} must be (T,)")
    return opening, target


def _target(envelope: np.ndarray, gamma: float) -> np.ndarray:
    """What the mouth should follow: the non-negative envelope to the power ``gamma``."""
    return np.clip(np.asarray(envelope, np.float64), 0.0, None) ** gamma


def sync_lag(
    opening: np.ndarray,
    envelope: np.ndarray,
    max_lag: int = MAX_LAG,
    gamma: float = MOUTH_GAMMA,
) -> tuple[int, float]:
    """(lag, correlation): the lag L in -max_lag..max_lag frames maximising the Pearson
    correlation of ``opening[t]`` with ``envelope[t - L] ** gamma`` over the frames
    where both exist (at least ``MIN_OVERLAP``), and that correlation.

    L > 0: the video lags the audio (the mouth moves L frames late); L < 0: the video
    leads. Ties go to the smallest |L|, so a degenerate video (every correlation 0)
    gives (0, 0.0): read the correlation, not the lag alone.
    """
    opening, target = _lengths(opening, envelope, gamma)
    n = len(opening)
    best_lag, best_r = 0, 0.0
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):
        if n - abs(lag) < MIN_OVERLAP:
            continue
        if lag >= 0:
            r, _ = _pearson(opening[lag:], target[: n - lag])
        else:
            r, _ = _pearson(opening[: n + lag], target[-lag:])
        if r > best_r:
            best_lag, best_r = lag, r
    return best_lag, best_r


# -- dancing -----------------------------------------------------------------------------


@dataclass
class PoseErrors:
    """Per-frame agreement of the detected figure with the driving skeleton."""

    chamfer: np.ndarray  # (T,) symmetric chamfer distance, px
    joint: np.ndarray  # (T,) mean distance from each joint to the nearest figure pixel, px
    iou: np.ndarray  # (T,) IoU of detected vs driven figure masks
    found: np.ndarray  # (T,) bool: any figure pixel detected


def pose_error(frames: np.ndarray, joints: np.ndarray, figure_rgb: np.ndarray) -> PoseErrors:
    """Compare the figure in ``frames`` (T, H, W, 3), H == W, with the skeleton
    ``joints`` (T, J, 2) (x, y) that drives it, in pixels of these frames (scale the
    world's joints by ``H / world size`` for another resolution).

    Detected figure: pixels within ``FIGURE_TOLERANCE`` of ``figure_rgb`` (3,) (object
    colours are >= 100 RGB from every background pixel). Driven figure:
    :func:`svi.world.dancing.figure_mask` of the joints, exactly what the world draws.
    Per frame:

    - ``chamfer``: mean over detected pixels of the distance (pixel centres) to the
      nearest driven pixel, plus the same from driven to detected, halved;
    - ``joint``: mean over joints of the distance from the joint to the nearest
      detected pixel centre (a joint position error that needs no pose detector;
      ~0.5 px on the true frames, whose 2-px-wide lines pass through every joint);
    - ``iou``: |detected & driven| / |detected | driven|.

    A frame with no detected pixel gets the frame diagonal (H * sqrt 2) as chamfer and
    joint error and IoU 0; if the driven mask is empty too, chamfer 0 and IoU 1.
    """
    frames = np.asarray(frames)
    joints = np.asarray(joints, np.float32)
    num_frames, height, width = frames.shape[:3]
    if height != width or joints.shape[:1] != (num_frames,) or joints.shape[2:] != (2,):
        raise ValueError(
            f"need square frames and (T, J, 2) joints, got {frames.shape}, {joints.shape}"
        )
    diagonal = float(np.hypot(height, width))
    detected = _near(frames, figure_rgb, FIGURE_TOLERANCE)
    driven = figure_mask(joints, height)
    chamfer = np.full(num_frames, diagonal, np.float64)
    joint = np.full(num_frames, diagonal, np.float64)
    iou = np.zeros(num_frames, np.float64)
    found = detected.any(axis=(1, 2))
    for t in range(num_frames):
        det, drv = detected[t], driven[t]
        union = int((det | drv).sum())
        iou[t] = (det & drv).sum() / union if union else 1.0
        if not det.any():
            if not drv.any():
                chamfer[t] = 0.0
            continue
        rows, cols = np.nonzero(det)
        centres = np.stack([cols + 0.5, rows + 0.5], axis=1)  # (N, 2) x, y
        gaps = np.linalg.norm(joints[t][:, None, :] - centres[None], axis=-1)  # (J, N)
        joint[t] = gaps.min(axis=1).mean()
        if drv.any():
            to_driven = ndimage.distance_transform_edt(~drv)[det].mean()
            to_detected = ndimage.distance_transform_edt(~det)[drv].mean()
            chamfer[t] = (to_driven + to_detected) / 2
    return PoseErrors(chamfer, joint, iou, found)


# -- fidelity to the true frames -----------------------------------------------------------


def psnr_ssim(frames: np.ndarray, true_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (PSNR in dB, SSIM), each (T,) float64, of uint8 ``frames`` against
    ``true_frames`` (T, H, W, 3).

    PSNR: ``10 log10(255^2 / MSE)`` over all pixels and channels; ``inf`` for identical
    frames. SSIM: single scale, per RGB channel, with local means, variances and
    covariance over a ``SSIM_WINDOW`` x ``SSIM_WINDOW`` uniform window (population
    statistics), ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, averaged over the
    windows lying fully inside the frame and the three channels (1 for identical
    frames; symmetric in its arguments).
    """
    a, b = np.asarray(frames, np.float64), np.asarray(true_frames, np.float64)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"need two (T, H, W, 3) videos of one shape, got {a.shape}, {b.shape}")
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"frames must be at least {SSIM_WINDOW} px for SSIM, got {a.shape}")
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10 * np.log10(PEAK**2 / np.maximum(mse, 1e-300)), np.inf)

    size = (1, SSIM_WINDOW, SSIM_WINDOW, 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size=size, mode="reflect")

    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a**2
    var_b = mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    pad = SSIM_WINDOW // 2
    ssim = ssim_map[:, pad : a.shape[1] - pad, pad : a.shape[2] - pad].mean(axis=(1, 2, 3))
    return psnr.astype(np.float64), ssim.astype(np.float64)


def clip_means(values: np.ndarray, clip_frames: int) -> np.ndarray:
    """(K,) mean of per-frame ``values`` (T,) over each clip of ``clip_frames`` frames
    (clip k = frames [k * clip_frames, (k + 1) * clip_frames); the last may be shorter).
    Infinite values (PSNR of identical frames) give an infinite mean."""
    values = np.asarray(values, np.float64)
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
    return np.array(
        [values[s : s + clip_frames].mean() for s in range(0, len(values), clip_frames)],
        np.float64,
    )
