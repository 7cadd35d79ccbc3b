"""Event following in creative world scenes: did the prompted change happen?

A creative scene applies one event per world clip (``clip_frames`` frames) and its
prompt stream announces it (``truth.meta["events"]``). A rollout that receives the
same stream is scored per event on the generated frames of the event's response
window - the last ``RESPONSE_FRAMES`` frames of the world clip the event starts, when
the truth already shows the change:

- ``colour``: the object in its new colour, once (:func:`metrics.object_found`: one
  blob of the right size, no more than the truth has objects of that colour) in most
  window frames, and in most of them no blob of the old colour and that size unless
  another object still has it;
- ``enter``: the entering object, once, at the end of the window;
- ``leave``: no blob of the leaving object's colour and size at the end of the window
  (unless another object still has it; a patch mosaic repeating the colour is not an
  absence);
- ``background``: on the pixels the event changed, off the true objects, the frames
  are nearer the new true background than the old one (median absolute error);
- ``dim`` / ``brighten``: the mean luminance moves the same way as the truth's, by at
  least half as much, against the generated frames just before the event;
- ``speed_up`` / ``resume`` / ``stop``: not scored (needs object tracking).

Each event gives 1 (followed), 0 (not) or None (not scorable: too few frames or
objects too small). Stability of what the prompt did not change is measured by the
drift metrics against the same truth (identity, background error, colour drift).
"""

from __future__ import annotations

import numpy as np

from svi.bench import metrics

RESPONSE_FRAMES = 5  # frames at the end of an event's world clip that are scored
SCORED_KINDS = ("colour", "enter", "leave", "background", "dim", "brighten")


def _other_has(truth, t: int, colour: np.ndarray, skip: int) -> bool:
    """Does another visible object of the truth at frame ``t`` share ``colour``?"""
    for k in range(truth.masks.shape[1]):
        if k == skip or truth.masks[t, k].sum() < metrics.MIN_OBJECT_AREA:
            continue
        if np.linalg.norm(truth.colours[t, k].astype(float) - colour) < metrics.COLOUR_TOLERANCE:
            return True
    return False


def _context(truth, t: int, colour: np.ndarray) -> tuple[np.ndarray, int]:
    return metrics.truth_context(truth.colours[t], truth.masks[t].sum(axis=(1, 2)), colour)


def _found(video: np.ndarray, truth, t: int, colour: np.ndarray, area: float) -> bool:
    """The object is in generated frame ``t`` once (as many times as the truth shows
    its colour), found as identity finds it: :func:`metrics.object_found`."""
    others, copies = _context(truth, t, colour)
    return metrics.object_found(
        video[t], colour, area, truth.background[t], others=others, copies=copies
    )


def _absent(video: np.ndarray, truth, t: int, colour: np.ndarray, area: float) -> bool:
    """No blob of ``colour`` and the object's size in generated frame ``t`` (a patch
    mosaic repeating the colour is not an absence)."""
    others, _ = _context(truth, t, colour)
    return metrics.sized_blob_count(video[t], colour, area, truth.background[t], others) == 0


def _share(test, video: np.ndarray, truth, frames: range, colour: np.ndarray, area: float):
    hits = [test(video, truth, t, colour, area) for t in frames]
    return float(np.mean(hits)) if hits else float("nan")


def _luma(frames: np.ndarray) -> float:
    return float(metrics.grey(frames).mean())


def follow_event(
    video: np.ndarray, true_video: np.ndarray, truth, event: dict, clip_frames: int
) -> float | None:
    """1.0 / 0.0 if ``event`` (an entry of ``truth.meta["events"]``) was followed in the
    generated ``video`` (frames aligned with the true frames ``true_video`` and their
    ``truth``), None if it cannot be scored."""
    start = int(event["frame"])
    end = min(start + clip_frames, len(video), truth.num_frames)
    window = range(max(start, end - RESPONSE_FRAMES), end)
    if start < 1 or len(window) < 2 or event["kind"] not in SCORED_KINDS:
        return None
    last = window[-1]
    kind, k = event["kind"], event.get("object")
    if kind in ("colour", "enter", "leave"):
        area = float(truth.masks[start - 1 if kind == "leave" else last, k].sum())
        if area < metrics.MIN_OBJECT_AREA:
            return None
    if kind == "colour":
        new = truth.colours[last, k].astype(float)
        old = truth.colours[start - 1, k].astype(float)
        new_ok = _share(_found, video, truth, window, new, area) > 0.5
        old_gone = (
            _other_has(truth, last, old, k)
            or _share(_absent, video, truth, window, old, area) > 0.5
        )
        return float(new_ok and old_gone)
    if kind == "enter":
        colour = truth.colours[last, k].astype(float)
        return float(_found(video, truth, last, colour, area))
    if kind == "leave":
        colour = truth.colours[start - 1, k].astype(float)
        if _other_has(truth, last, colour, k):
            return None
        return float(_absent(video, truth, last, colour, area))
    if kind == "background":
        gen, new = video[window].astype(float), truth.background[window].astype(float)
        old = np.broadcast_to(truth.background[start - 1].astype(float), new.shape)
        # the pixels the event changed, off the true objects (a backdrop that keeps one
        # of its colours leaves most pixels as they were: their error says nothing)
        changed = (new != old).any(axis=-1) & metrics.background_region(truth.masks[window])
        if not changed.any():
            return None
        err_new = np.median(np.abs(gen - new)[changed])
        return float(err_new < np.median(np.abs(gen - old)[changed]))
    # dim / brighten
    before = range(max(0, start - 3), start)
    true_change = _luma(true_video[window]) - _luma(true_video[before])
    gen_change = _luma(video[window]) - _luma(video[before])
    if abs(true_change) < metrics.REFERENCE_FLOOR:
        return None
    return float(np.sign(gen_change) == np.sign(true_change)
                 and abs(gen_change) >= 0.5 * abs(true_change))  # fmt: skip


def events_in(truth, first: int, stop: int, clip_frames: int) -> list[dict]:
    """The events whose response window ends in the frames ``[first, stop)``."""
    out = []
    for event in truth.meta.get("events", []):
        end = min(int(event["frame"]) + clip_frames, truth.num_frames)
        if first <= end - 1 < stop:
            out.append(event)
    return out
