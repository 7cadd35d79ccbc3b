"""Where a generation starts: a user picture, or a scene of the procedural world.

A start is ``(frames, prompts)``: ``frames`` (M0, H, W, 3) uint8 at the model's size
(frame 0 is the anchor) and the prompt stream.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from svi.crop import fit_frames, largest_crop
from svi.errors import SviError
from svi.models.presets import ModelPreset

log = logging.getLogger(__name__)

DEFAULT_WORLD_SEED = 90_024  # a test-split seed: the demo never shows a training scene


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop to the model's aspect ratio, then resize (Lanczos) to (height, width)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    _, _, ch, cw = largest_crop(h, w, height, width)
    log.warning(
        "note: image %dx%d cropped to %dx%d and resized to %dx%d", w, h, cw, ch, width, height
    )
    return fit_frames(image[None], height, width)[0]


def image_start(image: np.ndarray, preset: ModelPreset, *, stretch: bool = False) -> np.ndarray:
    """One start frame from a picture (H, W, 3) uint8 (:func:`svi.video.read_image`):
    centre-cropped to the clip's aspect and resized, or - ``stretch``, as the released
    scripts do - resized to the clip size as it is (bicubic, PIL's default)."""
    if stretch:
        if image.shape[:2] == (preset.height, preset.width):
            return image[None]
        size = (preset.width, preset.height)
        return np.array(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))[None]
    return fit_image(image, preset.height, preset.width)[None]


def clip_size(
    height: int,
    width: int,
    *,
    max_width: int | None = None,
    max_side: int | None = None,
    multiple: int = 16,
) -> tuple[int, int]:
    """(height, width) of the clip for a ``height x width`` start image, aspect kept.

    ``max_width`` is the released scripts' rule (``calculate_dimensions``): a wider image
    is scaled down to that width, a narrower one kept; ``max_side`` caps the longer side
    instead. Both sides are then rounded down to a multiple of ``multiple`` (Wan: VAE 8 x
    patch 2). Never upscales.
    """
    if max_width is not None:
        if width > max_width:
            height, width = int(max_width * height / width), max_width
    elif max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        height, width = int(height * scale), int(width * scale)
    h, w = height // multiple * multiple, width // multiple * multiple
    if h < multiple or w < multiple:
        raise SviError(f"a {width}x{height} image is too small for clips of {multiple}-pixel "
                       "tokens; give --height/--width")  # fmt: skip
    return h, w


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
