"""Where a generation starts: a user picture, or a scene of the procedural world.

A start is ``(frames, prompts)``: ``frames`` (M0, H, W, 3) uint8 at the model's size
(frame 0 is the anchor) and the prompt stream.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from svi.errors import SviError
from svi.models.presets import ModelPreset
from svi.video import read_image

log = logging.getLogger(__name__)

DEFAULT_WORLD_SEED = 90_024  # a test-split seed: the demo never shows a training scene


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop to the model's aspect ratio, then resize (Lanczos) to (height, width)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    scale = max(height / h, width / w)
    ch, cw = round(height / scale), round(width / scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = Image.fromarray(image[top : top + ch, left : left + cw])
    log.warning(
        "note: image %dx%d cropped to %dx%d and resized to %dx%d", w, h, cw, ch, width, height
    )
    return np.asarray(crop.resize((width, height), Image.Resampling.LANCZOS))


def image_start(path: Path, preset: ModelPreset) -> np.ndarray:
    """One start frame from any picture file."""
    return fit_image(read_image(path), preset.height, preset.width)[None]


def world_start(
    preset: ModelPreset, kind: str = "consistent", seed: int = DEFAULT_WORLD_SEED, frames: int = 2
) -> tuple[np.ndarray, list[str]]:
    """The first ``frames`` real frames and the scene prompt of a world scene."""
    if preset.family != "world":
        raise SviError(f"{preset.name} needs --image and --prompt (no world scene for it)")
    from svi.world import WorldConfig, render_episode, split_of

    ep = render_episode(kind, seed, max(frames, 1), WorldConfig(size=preset.height))
    if split_of(seed) == "train":
        log.warning("world seed %d is a training scene", seed)
    return ep.frames[:frames], [ep.prompt]
