"""Hard-edged shape masks, vectorised over frames.

A pixel (row i, column j) has its centre at (x, y) = (j + 0.5, i + 0.5); it belongs
to a shape when its centre is inside. No anti-aliasing, so masks are exact.
``radius`` is the disc/ring outer radius, the square half-size and the triangle
circumradius. A NaN centre gives an empty mask (object not in the scene).
"""

from __future__ import annotations

import numpy as np

SHAPES = ("disc", "square", "triangle", "ring")
RING_INNER = 0.55  # inner radius of a ring, as a fraction of its outer radius
SQRT3 = float(np.sqrt(3.0))


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x (1, 1, W) and y (1, H, 1) pixel-centre coordinates, ready to broadcast over frames."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, None, :], c[None, :, None]


def extents(shape: str, radius: float) -> tuple[float, float, float, float]:
    """How far the shape reaches from its centre: (left, right, up, down) in px."""
    if shape == "triangle":
        half = radius * SQRT3 / 2
        return half, half, radius, radius / 2
    return radius, radius, radius, radius


def shape_mask(shape: str, centres: np.ndarray, radii: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W) bool mask of ``shape`` at ``centres`` (T, 2) with ``radii`` (T,)."""
    x, y = pixel_centres(size)
    cx = centres[:, 0, None, None].astype(np.float32)
    cy = centres[:, 1, None, None].astype(np.float32)
    r = radii[:, None, None].astype(np.float32)
    dx, dy = x - cx, y - cy
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 > (RING_INNER * r) ** 2)
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":  # pointing up; vertices at angles -90, 30, 150 degrees
        return (SQRT3 * np.abs(dx) - dy <= r) & (dy <= r / 2)
    raise ValueError(f"unknown shape {shape!r}")


def ellipse_mask(
    centres: np.ndarray, half_width: np.ndarray, half_height: np.ndarray, size: int
) -> np.ndarray:
    """(T, H, W) bool axis-aligned ellipse masks."""
    x, y = pixel_centres(size)
    dx = (x - centres[:, 0, None, None]) / half_width[:, None, None]
    dy = (y - centres[:, 1, None, None]) / half_height[:, None, None]
    return dx * dx + dy * dy <= 1.0


def segment_distance(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    """Distance (T, H, W) from each pixel centre to the segment a-b, a and b (T, 2)."""
    x, y = pixel_centres(size)
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    ex, ey = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay
    length2 = np.maximum(ex * ex + ey * ey, 1e-9)
    t = np.clip(((x - ax) * ex + (y - ay) * ey) / length2, 0.0, 1.0)
    px, py = x - (ax + t * ex), y - (ay + t * ey)
    return np.sqrt(px * px + py * py)
