"""Auto re-roll: judge a finished clip by the jump it makes at its seam, and pick a try.

A clip regenerates the M carried frames it was given (SVI's hand-off), so what a viewer
sees at the seam is how far those regenerated frames are from the originals shown at
the end of the previous clip. Two weight-free scores, both on a 0-1 scale:

- ``seam``: mean absolute difference in luminance between the clip's first M frames and
  the carried frames (0 = the clip continues exactly what was shown);
- ``colour``: distance of the clip's mean colour from the carried frames' mean colour
  (:func:`svi.pixels.colour_drift`): a sudden colour shift.

With ``--reroll T`` a clip whose larger score exceeds T is generated again with the next
seed (``seed + 1``, ``seed + 2`` ...), up to ``--max-rerolls`` more times; the first try
within T is kept, else the try with the lowest score. Every try (seed, scores, kept)
is recorded in the manifest. The decision depends only on the clip and its carry, so a
resumed run re-rolls exactly as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from svi.pixels import colour_drift, grey


def clip_scores(frames: np.ndarray, carried: np.ndarray) -> dict[str, float]:
    """``{"seam", "colour"}`` of a clip (F, H, W, 3) uint8 given the carried frames (M, ...)."""
    m = len(carried)
    seam = float(np.abs(grey(frames[:m]) - grey(carried)).mean())
    return {"seam": seam, "colour": colour_drift(frames, carried)}


def score(scores: dict[str, float]) -> float:
    """The number compared with the threshold: the larger of the two."""
    return max(scores.values())
