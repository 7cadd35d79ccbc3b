"""World settings: one frozen dataclass, every length in pixels at the reference size 32.

Sizes and speeds are given for 32x32 frames and scale with ``size / 32``, so a
scene rendered at 64 px looks the same as at 32 px, only sharper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from svi.errors import SviError

KINDS = ("consistent", "creative", "talking", "dancing")
SAMPLE_RATE = 16_000  # Hz, the talking kind's audio
REFERENCE_SIZE = 32  # the size at which radii, speeds and line widths are given
MIN_SIZE, MAX_SIZE = 16, 128


@dataclass(frozen=True)
class WorldConfig:
    """How the world renders: frame size and rate, object counts, sizes and speeds.

    ``min_radius``/``max_radius`` (pixels) and ``max_speed`` (pixels per frame) are
    given at 32 px and scaled by :attr:`scale`. ``clip_frames`` is the clip length
    of prompt streams and creative events (clip ``k`` starts at ``k * clip_frames``).
    """

    size: int = 32
    fps: int = 8
    min_objects: int = 1
    max_objects: int = 3
    min_radius: float = 4.0
    max_radius: float = 6.0
    max_speed: float = 1.0
    clip_frames: int = 8

    def __post_init__(self) -> None:
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise SviError(f"world size must be in {MIN_SIZE}..{MAX_SIZE} px, got {self.size}")
        if self.fps < 1:
            raise SviError(f"world fps must be >= 1, got {self.fps}")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise SviError(
                "world objects need 1 <= min_objects <= max_objects <= 6, "
                f"got {self.min_objects}..{self.max_objects}"
            )
        if not 1.0 <= self.min_radius <= self.max_radius <= 10.0:
            raise SviError(
                "world radii need 1 <= min_radius <= max_radius <= 10 (px at 32 px), "
                f"got {self.min_radius}..{self.max_radius}"
            )
        if not 0.0 < self.max_speed <= 4.0:
            raise SviError(f"world max_speed must be in (0, 4] px/frame, got {self.max_speed}")
        if self.clip_frames < 2:
            raise SviError(f"world clip_frames must be >= 2, got {self.clip_frames}")

    @property
    def scale(self) -> float:
        """Pixels at this size per pixel at the reference size 32."""
        return self.size / REFERENCE_SIZE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
