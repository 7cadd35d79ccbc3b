"""The drift monitor: the weight-free metrics of ``svi bench video`` per clip, computed
on each clip's frames as it arrives (the video file is never re-read per clip).

Per clip k (its new frames, as stitched into the video):

- ``colour_drift``: distance of its mean colour from clip 0's (:func:`metrics.colour_drift`);
- ``grid_energy``: patch-grid artefact energy x 1000 at a 16-pixel grid (as the bench);
- ``motion``: mean frame-to-frame change (0 = frozen);
- ``seam``: the change from the previous clip's last frame to this clip's first, minus
  the median change inside this clip (0 = seamless; none for clip 0);
- ``tries``: how many times the clip was generated (auto re-roll).

A branch or resume starts with the earlier clips' rows from the video once
(:meth:`ClipMonitor.seed_from_video`), streaming it clip by clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from svi.bench import metrics

GRID = 16  # pixels: the patch grid of a Wan DiT in pixels (as ``svi bench video --grid``)
PLOTTED = ("colour_drift", "grid_energy", "motion", "seam")


class ClipMonitor:
    """Rows of drift metrics, one per clip, plus what the next clip's row needs."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._reference: np.ndarray | None = None  # clip 0's frames
        self._last: np.ndarray | None = None  # the previous clip's last frame

    def add(self, index: int, frames: np.ndarray, record: dict | None = None) -> dict:
        """The row of clip ``index`` from its new frames (F, H, W, 3) uint8."""
        if self._reference is None:
            self._reference = frames.copy()
        change = np.abs(np.diff(metrics.grey(frames), axis=0)).mean(axis=(1, 2))
        within = float(np.median(change)) if len(change) else 0.0
        seam = (None if self._last is None or index == 0
                else metrics.seam_jump(self._last, frames[0], within))  # fmt: skip
        row = {
            "clip": index,
            "colour_drift": metrics.colour_drift(frames, self._reference),
            "grid_energy": 1000 * metrics.grid_energy(frames, GRID),
            "motion": metrics.motion_energy(frames),
            "seam": seam,
            "tries": len((record or {}).get("tries") or [None]),
        }
        self._last = frames[-1].copy()
        self.rows.append(row)
        return row

    def seed_from_video(self, video: Path, plan: dict, clips: int) -> None:
        """Rows of the first ``clips`` clips of ``video`` (a session's file, its plan)."""
        from svi.video import iter_frames

        if clips <= 0:
            return
        head, new = int(plan.get("stitch_head", 0)), int(plan["new_frames"])
        bounds = [head + new * (k + 1) for k in range(clips)]  # end of clip k in the video
        segment: list[np.ndarray] = []
        for t, frame in enumerate(iter_frames(video)):
            segment.append(frame)
            if t + 1 == bounds[len(self.rows)]:
                self.add(len(self.rows), np.stack(segment))
                segment = []
                if len(self.rows) == clips:
                    break

    def table(self) -> list[list]:
        """Rows for a table: clip, the plotted metrics (rounded), tries."""
        return [[r["clip"], *(_round(r[m]) for m in PLOTTED), r["tries"]] for r in self.rows]


COLUMNS = ["clip", *PLOTTED, "tries"]


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 5)


def figure(rows: list[dict]):
    """A matplotlib figure: one small panel per metric against the clip index (no pyplot:
    nothing is kept in a global figure registry)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=80, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    x = [r["clip"] for r in rows]
    for ax, name in zip(axes, PLOTTED, strict=True):
        y = [np.nan if r[name] is None else r[name] for r in rows]
        ax.plot(x, y, marker="o", markersize=3, linewidth=1)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("clip", fontsize=8)
    return fig
