"""Named colours: saturated ones for objects, muted darker ones for backgrounds.

Objects always keep one flat colour from :data:`OBJECT_COLOURS`; backgrounds mix
colours from :data:`BACKGROUND_COLOURS`. Every object colour is at least
:data:`MIN_CONTRAST` (Euclidean RGB) away from every background pixel, which
:func:`contrast` checks on the rendered background.
"""

from __future__ import annotations

import numpy as np

OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 100, 255),
    "yellow": (250, 225, 40),
    "cyan": (40, 220, 230),
    "magenta": (230, 50, 210),
    "orange": (255, 145, 30),
    "purple": (150, 70, 240),
    "white": (245, 245, 245),
    "pink": (255, 140, 190),
    "lime": (180, 250, 70),
}

BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "navy": (30, 40, 90),
    "maroon": (100, 35, 40),
    "olive": (95, 95, 40),
    "teal": (30, 95, 95),
    "brown": (100, 65, 40),
    "grey": (90, 90, 90),
    "slate": (60, 70, 85),
    "plum": (85, 45, 85),
    "dark green": (35, 80, 45),
    "charcoal": (45, 45, 50),
    "sand": (140, 125, 95),
}

# Face parts of the talking kind (not used for free objects).
EYE_COLOUR = ("black", (20, 20, 28))
MOUTH_COLOUR = ("dark red", (120, 20, 40))

MIN_CONTRAST = 100.0  # object colour vs any background pixel
MIN_BACKGROUND_SPREAD = 35.0  # the two colours of a texture differ at least this much


def rgb(name: str) -> np.ndarray:
    """The uint8 RGB triple of an object or background colour name."""
    table = OBJECT_COLOURS if name in OBJECT_COLOURS else BACKGROUND_COLOURS
    return np.asarray(table[name], dtype=np.uint8)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean RGB distance, broadcasting over leading axes."""
    diff = np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)
    return np.sqrt((diff * diff).sum(axis=-1))


def contrast(colour: np.ndarray, image: np.ndarray) -> float:
    """Smallest RGB distance between ``colour`` (3,) and the pixels of ``image`` (H, W, 3)."""
    return float(distance(distinct_pixels(image), colour).min())


def distinct_pixels(image: np.ndarray) -> np.ndarray:
    """The distinct colours (N, 3) of an image (H, W, 3) uint8."""
    flat = image.reshape(-1, 3).astype(np.int32)
    codes = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2])
    return np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)
