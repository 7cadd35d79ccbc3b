"""Compositing: background, then flat-coloured layers in order, then lighting.

Each layer is one object with one flat colour per frame and a hard-edged mask, so
the ground truth is exact: visible masks are the layer masks minus everything drawn
later, and lighting is a per-frame lookup table applied identically to frames,
backgrounds and object colours. Frames are processed in time chunks to bound memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from svi.world.shapes import shape_mask

MaskFn = Callable[[int, int], np.ndarray]  # (t0, t1) -> (t1 - t0, H, W) bool
_CHUNK_PIXELS = 1 << 22  # frames * H * W per chunk


@dataclass
class Layer:
    """One flat-coloured object: per-frame colour (unlit), centre, size and mask."""

    name: str
    shape: str
    colours: np.ndarray  # (T, 3) uint8, before lighting
    centres: np.ndarray  # (T, 2) float32 (x, y); NaN where not in the scene
    sizes: np.ndarray  # (T,) float32
    mask: MaskFn
    span: tuple[int, int] | None = None  # frames [first, last) where it may be drawn


def shape_layer(
    name: str, shape: str, colours: np.ndarray, centres: np.ndarray, sizes: np.ndarray, size: int
) -> Layer:
    """A :class:`Layer` drawn with :func:`svi.world.shapes.shape_mask`."""

    def mask(t0: int, t1: int) -> np.ndarray:
        return shape_mask(shape, centres[t0:t1], sizes[t0:t1], size)

    alive = np.flatnonzero(~np.isnan(centres[:, 0]))
    span = (int(alive[0]), int(alive[-1]) + 1) if len(alive) else (0, 0)
    return Layer(name, shape, colours, centres, sizes, mask, span)


@dataclass
class Composite:
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, K, H, W) bool, visible pixels
    in_scene: np.ndarray  # (T, K) bool, the object has pixels inside the frame
    colours: np.ndarray  # (T, K, 3) uint8 after lighting
    background: np.ndarray  # (T, H, W, 3) uint8 after lighting


def light_table(level: float) -> np.ndarray:
    """(256,) uint8 lookup table of a lighting level (multiply, round, clip)."""
    return np.clip(np.rint(np.arange(256, dtype=np.float64) * level), 0, 255).astype(np.uint8)


def apply_lighting(images: np.ndarray, lighting: np.ndarray) -> None:
    """In place: multiply each frame (leading axis) by its lighting level."""
    for level in np.unique(lighting):
        if level == 1.0:
            continue
        selected = lighting == level
        images[selected] = light_table(float(level))[images[selected]]


def composite(
    backgrounds: list[np.ndarray],
    background_index: np.ndarray,
    lighting: np.ndarray,
    layers: list[Layer],
    size: int,
) -> Composite:
    """Render all frames and their exact ground truth; layers are drawn first to last."""
    num_frames, num_layers = len(background_index), len(layers)
    stack = np.stack(backgrounds)  # (B, H, W, 3)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    background = np.empty_like(frames)
    masks = np.zeros((num_frames, num_layers, size, size), dtype=bool)
    in_scene = np.zeros((num_frames, num_layers), dtype=bool)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    for t0 in range(0, num_frames, chunk):
        t1 = min(t0 + chunk, num_frames)
        canvas = stack[background_index[t0:t1]]  # (n, H, W, 3)
        background[t0:t1] = canvas
        drawn = []  # (k, a, b, raw mask of frames a..b)
        for k, layer in enumerate(layers):
            first, last = layer.span if layer.span is not None else (0, num_frames)
            a, b = max(t0, first), min(t1, last)
            if a >= b:
                continue
            raw = layer.mask(a, b)
            paint = np.broadcast_to(layer.colours[a:b, None, None, :], (*raw.shape, 3))
            np.copyto(canvas[a - t0 : b - t0], paint, where=raw[..., None])
            in_scene[a:b, k] = raw.any(axis=(1, 2))
            drawn.append((k, a, b, raw))
        covered = np.zeros((t1 - t0, size, size), dtype=bool)
        for k, a, b, raw in reversed(drawn):
            masks[a:b, k] = raw & ~covered[a - t0 : b - t0]
            covered[a - t0 : b - t0] |= raw
        frames[t0:t1] = canvas
    colours = np.stack([layer.colours for layer in layers], axis=1) if layers else None
    colours = np.zeros((num_frames, 0, 3), np.uint8) if colours is None else colours.copy()
    apply_lighting(frames, lighting)
    apply_lighting(background, lighting)
    apply_lighting(colours, lighting)
    return Composite(frames, masks, in_scene, colours, background)
