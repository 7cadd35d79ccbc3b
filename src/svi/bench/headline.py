"""The headline of a drift table: where a video stands between a frozen picture (0) and
the truth (1), per clip.

Per-metric columns can each be won by a video that is plainly wrong: a frozen start
frame has the right objects somewhere, no flicker and no seam; jitter changes at every
frame boundary as much as anything does. The headline scores a clip by six errors,
each 0 for the truth and at most 1, all measured against the truth at the same frames:

- ``objects``: true objects not found where the truth has them (located identity of
  the truth minus the video's, floored at 0);
- ``motion``: frame-to-frame change unlike the truth's, too still or too jittery alike
  (:func:`ratio_error`);
- ``seam``: change across the clip boundary unlike the truth's change at the same
  frames (clips after the first);
- ``flicker``: back-and-forth brightness unlike the truth's own;
- ``background``: background error beyond the truth's, ``APPEARANCE_SCALE`` = all wrong
  (a median over pixels and channels: it sees the backdrop change, not a colour cast);
- ``colour``: the mean colour's distance to the truth's (a cast, a fade), same scale.

The clip's error ``E`` is the mean of the errors defined there (a clip whose truth shows
no scorable object has no ``objects`` error), and its headline is
``1 - E / max(E_freeze, ERROR_FLOOR)`` with ``E_freeze`` the error of the start frame
held, clipped below at ``HEADLINE_MIN``: 1 = the truth, 0 = the frozen picture, below 0
worse than doing nothing. ``ERROR_FLOOR`` keeps clips where the truth itself stands
still (objects gone, nothing moving: the freeze is nearly right there) from dividing by
~0; there a freeze scores above 0.
"""

from __future__ import annotations

import math

import numpy as np

HEADLINE_VERSION = "headline-v1"
CHANGE_FLOOR = 0.002  # ~0.5 grey level: changes below this are quantisation noise
APPEARANCE_SCALE = 0.1  # background error or colour distance that counts as all wrong
ERROR_FLOOR = 0.05  # the least freeze error a clip is normalised by
HEADLINE_MIN = -1.0  # twice the freeze's error or more
COMPONENTS = ("objects", "motion", "seam", "flicker", "background", "colour")


def ratio_error(value, truth, floor: float = CHANGE_FLOOR):
    """``1 - min(a, b) / max(a, b)`` of ``a = value + floor`` and ``b = truth + floor``:
    0 when the two agree, towards 1 as one is many times the other, the same for 4x too
    much as for 4x too little (a frozen video and a jittering one both lose). Works on
    numbers and arrays; NaN in, NaN out."""
    a = np.asarray(value, dtype=float) + floor
    b = np.asarray(truth, dtype=float) + floor
    with np.errstate(invalid="ignore"):
        out = 1.0 - np.minimum(a, b) / np.maximum(a, b)
    return float(out) if out.ndim == 0 else out


def clip_errors(row: dict, truth_row: dict) -> dict[str, float]:
    """The six errors of one clip's ``row`` against the truth's row of the same clip
    (NaN where undefined: no scorable object, no seam before the first clip). Every
    error compares with the truth row's own value - the truth video as scored, through
    the same path as the video - so the truth's errors are 0 whatever that path costs."""
    located = _num(truth_row["identity_located"]) - _num(row["identity_located"])
    return {
        "objects": _clip01(located),
        "motion": ratio_error(_num(row["motion"]), _num(truth_row["motion"])),
        "seam": ratio_error(_num(row["seam_change"]), _num(truth_row["seam_change"])),
        "flicker": ratio_error(_num(row["flicker"]), _num(truth_row["flicker"])),
        "background": _clip01((_num(row["background_error"])
                               - _num(truth_row["background_error"])) / APPEARANCE_SCALE),
        "colour": _clip01((_num(row["colour_drift"]) - _num(truth_row["colour_drift"]))
                          / APPEARANCE_SCALE),
    }  # fmt: skip


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x)) if math.isfinite(x) else math.nan


def clip_error(row: dict, truth_row: dict) -> float:
    """``E`` of one clip: the mean of its defined errors (NaN if none is)."""
    values = [v for v in clip_errors(row, truth_row).values() if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def headline(error: float, freeze_error: float) -> float:
    """The clip's headline from its error and the frozen picture's on the same clip."""
    if not (math.isfinite(error) and math.isfinite(freeze_error)):
        return math.nan
    return max(HEADLINE_MIN, 1.0 - error / max(freeze_error, ERROR_FLOOR))


def headline_rows(rows: list[dict], truth_rows: list[dict], freeze_rows: list[dict]) -> None:
    """Add ``headline`` and ``headline_error`` to each per-clip row of one video, given
    the truth's and the frozen picture's rows of the same scene (same clips)."""
    if not (len(rows) <= len(truth_rows) and len(rows) <= len(freeze_rows)):
        raise ValueError(f"{len(rows)} clips need as many truth and freeze rows, got "
                         f"{len(truth_rows)} and {len(freeze_rows)}")  # fmt: skip
    for row, t, f in zip(rows, truth_rows, freeze_rows, strict=False):
        row["headline_error"] = clip_error(row, t)
        row["headline"] = headline(row["headline_error"], clip_error(f, t))


def _num(x) -> float:
    return math.nan if x is None else float(x)
