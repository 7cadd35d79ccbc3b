"""Static background textures: checkerboard, gradient, stripes, value noise, plain.

A background is a small frozen :class:`BackgroundSpec` (JSON-able) rendered to an
(H, W, 3) uint8 image by :func:`render_background`. Lengths in the spec are pixels
at 32 px and scale with the frame size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from svi.world.palette import (
    BACKGROUND_COLOURS,
    MIN_BACKGROUND_SPREAD,
    MIN_CONTRAST,
    contrast,
    distance,
    rgb,
)

FAMILIES = ("checkerboard", "gradient", "stripes", "noise", "plain")


@dataclass(frozen=True)
class BackgroundSpec:
    """One background: family, colour names and the family's geometry.

    ``angle`` (degrees) orients gradients and stripes; ``period`` is the checker
    cell or stripe width (px at 32 px); ``phase`` in [0, 1) shifts the pattern;
    ``noise_seed``/``noise_cells`` define the value-noise lattice.
    """

    family: str
    colours: tuple[str, ...]
    angle: float = 0.0
    period: float = 6.0
    phase: float = 0.0
    noise_seed: int = 0
    noise_cells: int = 3

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["colours"] = list(self.colours)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackgroundSpec:
        return cls(**{**data, "colours": tuple(data["colours"])})


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.arange(size, dtype=np.float32) + 0.5
    return centres[None, :], centres[:, None]  # x (1, W), y (H, 1)


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours, t (H, W) in [0, 1] -> (H, W, 3) uint8."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    out = a32 + (b32 - a32) * t[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _two_tone(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], b, a).astype(np.uint8)


def _value_noise(seed: int, cells: int, size: int) -> np.ndarray:
    """Smooth noise in [0, 1] (H, W): random lattice values, smoothstep-interpolated."""
    lattice = np.random.default_rng(seed).random((cells + 1, cells + 1)).astype(np.float32)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i = np.minimum(coords.astype(np.int64), cells - 1)
    f = coords - i
    f = f * f * (3.0 - 2.0 * f)
    iy, ix = i[:, None], i[None, :]
    fy, fx = f[:, None], f[None, :]
    top = lattice[iy, ix] * (1 - fx) + lattice[iy, ix + 1] * fx
    bottom = lattice[iy + 1, ix] * (1 - fx) + lattice[iy + 1, ix + 1] * fx
    noise = top * (1 - fy) + bottom * fy
    lo, hi = float(noise.min()), float(noise.max())
    return (noise - lo) / max(hi - lo, 1e-6)


def _palette_ramp(t: np.ndarray, colours: list[np.ndarray]) -> np.ndarray:
    """Map t in [0, 1] onto a piecewise-linear ramp through 2 or 3 colours."""
    if len(colours) == 2:
        return _blend(colours[0], colours[1], t)
    low = _blend(colours[0], colours[1], np.clip(2 * t, 0, 1))
    high = _blend(colours[1], colours[2], np.clip(2 * t - 1, 0, 1))
    return np.where((t < 0.5)[..., None], low, high)


@functools.lru_cache(maxsize=256)
def render_background(spec: BackgroundSpec, size: int) -> np.ndarray:
    """The (size, size, 3) uint8 image of ``spec`` (cached; read-only)."""
    scale = size / 32
    x, y = _pixel_grid(size)
    colours = [rgb(name) for name in spec.colours]
    theta = np.deg2rad(spec.angle)
    if spec.family == "plain":
        image = np.broadcast_to(colours[0], (size, size, 3)).copy()
    elif spec.family == "checkerboard":
        cell = spec.period * scale
        offset = spec.phase * cell
        parity = (np.floor((x + offset) / cell) + np.floor((y + offset) / cell)) % 2 == 1
        image = _two_tone(parity, colours[0], colours[1])
    elif spec.family == "stripes":
        width = spec.period * scale
        along = x * np.cos(theta) + y * np.sin(theta) + spec.phase * 2 * width
        image = _two_tone(np.floor(along / width) % 2 == 1, colours[0], colours[1])
    elif spec.family == "gradient":
        along = (x - size / 2) * np.cos(theta) + (y - size / 2) * np.sin(theta)
        along = np.broadcast_to(along, (size, size))
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
        image = _blend(colours[0], colours[1], t)
    elif spec.family == "noise":
        image = _palette_ramp(_value_noise(spec.noise_seed, spec.noise_cells, size), colours)
    else:
        raise ValueError(f"unknown background family {spec.family!r}")
    image.flags.writeable = False
    return image


def _sample_colours(rng: np.random.Generator, count: int) -> tuple[str, ...]:
    names = list(BACKGROUND_COLOURS)
    while True:
        picked = [names[i] for i in rng.choice(len(names), size=count, replace=False)]
        values = [rgb(name) for name in picked]
        spread = (
            min(
                float(distance(values[i], values[j]))
                for i in range(count)
                for j in range(i + 1, count)
            )
            if count > 1
            else MIN_BACKGROUND_SPREAD
        )
        if spread >= MIN_BACKGROUND_SPREAD:
            return tuple(picked)


def _sample_spec(rng: np.random.Generator, families: tuple[str, ...]) -> BackgroundSpec:
    family = families[int(rng.integers(len(families)))]
    if family == "plain":
        return BackgroundSpec("plain", _sample_colours(rng, 1))
    if family == "checkerboard":
        return BackgroundSpec(
            "checkerboard",
            _sample_colours(rng, 2),
            period=float(rng.choice([4.0, 5.0, 6.0, 8.0])),
            phase=round(float(rng.random()), 3),
        )
    if family == "stripes":
        return BackgroundSpec(
            "stripes",
            _sample_colours(rng, 2),
            angle=float(rng.choice([0.0, 45.0, 90.0, 135.0])),
            period=float(rng.choice([3.0, 4.0, 5.0, 6.0])),
            phase=round(float(rng.random()), 3),
        )
    if family == "gradient":
        return BackgroundSpec(
            "gradient", _sample_colours(rng, 2), angle=float(rng.integers(0, 360))
        )
    return BackgroundSpec(
        "noise",
        _sample_colours(rng, int(rng.integers(2, 4))),
        noise_seed=int(rng.integers(2**31)),
        noise_cells=int(rng.integers(2, 5)),
    )


def sample_background(
    rng: np.random.Generator,
    size: int,
    avoid: Sequence[np.ndarray] = (),
    families: tuple[str, ...] = FAMILIES,
) -> BackgroundSpec:
    """A random background whose pixels keep :data:`MIN_CONTRAST` from every ``avoid`` colour."""
    for _ in range(200):
        spec = _sample_spec(rng, families)
        image = render_background(spec, size)
        if all(contrast(colour, image) >= MIN_CONTRAST for colour in avoid):
            return spec
    raise RuntimeError("no background with enough contrast to the objects")  # pragma: no cover
