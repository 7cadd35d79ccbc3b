"""Fitting frames to a clip size: the centred crop of the clip's aspect, a random crop of
it (training augmentation), and the Lanczos resize - one implementation for start
pictures, training videos and pose streams."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # top, left, height, width


def largest_crop(h: int, w: int, height: int, width: int) -> Box:
    """The centred crop of a ``h x w`` frame with the aspect of ``height x width``."""
    s = min(h / height, w / width)
    ch, cw = min(h, max(1, round(height * s))), min(w, max(1, round(width * s)))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_crop(
    h: int, w: int, height: int, width: int, min_scale: float, rng: np.random.Generator
) -> Box:
    """A crop of the aspect of ``height x width``: side ``u`` x the largest one, ``u``
    uniform in [min_scale, 1], at a uniform position (three draws from ``rng``)."""
    _, _, ch, cw = largest_crop(h, w, height, width)
    u = float(rng.uniform(min_scale, 1.0))
    ch, cw = max(1, round(ch * u)), max(1, round(cw * u))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return top, left, ch, cw


def crop_resize(frames: np.ndarray, box: Box, height: int, width: int) -> np.ndarray:
    """Frames (T, h, w, 3) uint8 cropped to ``box`` and resized (Lanczos) to the clip size."""
    top, left, ch, cw = box
    return resize_frames(frames[:, top : top + ch, left : left + cw], height, width)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames (T, h, w, 3) uint8 resized (Lanczos) to ``height x width`` (if not already)."""
    if frames.shape[1:3] == (height, width):
        return frames
    size = (width, height)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS))
                     for f in frames])  # fmt: skip


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames (T, h, w, 3) uint8 centre-cropped to the aspect of ``height x width`` and
    resized (Lanczos) to it; unchanged when already that size."""
    h, w = frames.shape[1:3]
    if (h, w) == (height, width):
        return frames
    return crop_resize(frames, largest_crop(h, w, height, width), height, width)
