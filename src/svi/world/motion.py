"""Closed-form object motions, evaluated at an object's internal clock ``tau`` (frames).

Every motion is a pure function ``position(tau) -> (n, 2)`` (x, y) in pixels, so a
scene is deterministic, any frame can be evaluated directly and episodes are
prefix-stable. Speeding up or stopping an object changes only how fast its clock
runs (see ``scenes.py``), never the motion itself.

- :class:`Bounce`: constant velocity, elastic bounces on the walls of a box;
- :class:`Fall`: gravity bounce, a parabola in y on the floor, wall bounces in x;
- :class:`Orbit`: a circle at constant angular speed (omega > 0 is clockwise on screen,
  since y points down);
- :class:`Transit`: a straight line that ignores walls (objects leaving the frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Vec = tuple[float, float]


def reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold free positions into [lo, hi] as elastic wall bounces do (a triangle wave)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(p, (lo + hi) / 2)
    u = np.mod(p - lo, 2 * span)
    return lo + np.where(u > span, 2 * span - u, u)


def direction_words(vx: float, vy: float) -> str:
    """8-way screen direction of a velocity: 'left', 'up and right', ..."""
    horizontal = "right" if vx > 0 else "left"
    vertical = "down" if vy > 0 else "up"
    if abs(vx) >= 2.4 * abs(vy):
        return horizontal
    if abs(vy) >= 2.4 * abs(vx):
        return vertical
    return f"{vertical} and {horizontal}"


@dataclass(frozen=True)
class Bounce:
    """Constant velocity in the box [lo, hi]^2 with wall bounces.

    ``free_axis``/``free_until`` let an entering object fly in from outside the box:
    that axis moves freely while ``tau < free_until``.
    """

    start: Vec
    velocity: Vec
    lo: Vec
    hi: Vec
    free_axis: int = -1
    free_until: float = 0.0

    kind = "bounce"

    def position(self, tau: np.ndarray) -> np.ndarray:
        out = np.empty((len(tau), 2), dtype=np.float64)
        for axis in (0, 1):
            free = self.start[axis] + self.velocity[axis] * tau
            bounced = reflect(free, self.lo[axis], self.hi[axis])
            if axis == self.free_axis:
                bounced = np.where(tau < self.free_until, free, bounced)
            out[:, axis] = bounced
        return out

    def peak_speed(self) -> float:
        return math.hypot(*self.velocity)

    def direction(self) -> str:
        return direction_words(*self.velocity)


@dataclass(frozen=True)
class Fall:
    """Gravity bounce: y is a periodic parabola resting on the floor ``hi[1]``.

    ``apex`` is the bounce height above the floor (px), ``gravity`` in px/frame^2 and
    ``phase`` the clock offset (frames) into the bounce; x bounces between walls.
    """

    x0: float
    vx: float
    lo: Vec
    hi: Vec
    apex: float
    gravity: float
    phase: float

    kind = "fall"

    def half_period(self) -> float:
        return math.sqrt(2 * self.apex / self.gravity)

    def position(self, tau: np.ndarray) -> np.ndarray:
        half = self.half_period()
        s = np.mod(tau + self.phase + half, 2 * half) - half  # time from the apex
        height = self.apex - 0.5 * self.gravity * s * s
        x = reflect(self.x0 + self.vx * tau, self.lo[0], self.hi[0])
        return np.stack([x, self.hi[1] - height], axis=1)

    def peak_speed(self) -> float:
        return math.hypot(self.vx, self.gravity * self.half_period())

    def direction(self) -> str:
        return "right" if self.vx > 0 else "left"


@dataclass(frozen=True)
class Orbit:
    """Circle of ``radius`` around ``centre``; angle ``theta0 + omega * tau`` (radians)."""

    centre: Vec
    radius: float
    omega: float
    theta0: float

    kind = "orbit"

    def position(self, tau: np.ndarray) -> np.ndarray:
        theta = self.theta0 + self.omega * tau
        return np.stack(
            [
                self.centre[0] + self.radius * np.cos(theta),
                self.centre[1] + self.radius * np.sin(theta),
            ],
            axis=1,
        )

    def peak_speed(self) -> float:
        return abs(self.omega) * self.radius

    def direction(self) -> str:
        return "clockwise" if self.omega > 0 else "counterclockwise"


@dataclass(frozen=True)
class Transit:
    """A straight line that ignores the walls (used to leave the frame)."""

    start: Vec
    velocity: Vec

    kind = "transit"

    def position(self, tau: np.ndarray) -> np.ndarray:
        return np.asarray(self.start)[None, :] + tau[:, None] * np.asarray(self.velocity)[None, :]

    def peak_speed(self) -> float:
        return math.hypot(*self.velocity)

    def direction(self) -> str:
        return direction_words(*self.velocity)


Motion = Bounce | Fall | Orbit | Transit
