"""The :class:`Episode` record and the helpers every kind uses to build one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svi.errors import SviError
from svi.world.config import KINDS, WorldConfig
from svi.world.raster import Composite, Layer
from svi.world.splits import split_of
from svi.world.truth import GroundTruth


@dataclass
class Episode:
    """A rendered episode. ``prompts`` has one entry per clip; ``prompt`` is the first."""

    kind: str
    seed: int
    config: WorldConfig
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    prompt: str
    prompts: list[str]
    truth: GroundTruth
    audio: np.ndarray | None = None  # (N,) float32 mono at 16 kHz, talking only
    audio_envelope: np.ndarray | None = None  # (T,) float32 in [0, 1], talking only
    pose_frames: np.ndarray | None = None  # (T, H, W, 3) uint8, dancing only

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def split(self) -> str:
        return split_of(self.seed)


def check_request(kind: str, seed: int, num_frames: int) -> None:
    if kind not in KINDS:
        raise SviError(f"unknown world kind {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SviError(f"world seed must be an integer >= 0, got {seed!r}")
    if num_frames < 1:
        raise SviError(f"an episode needs at least 1 frame, got {num_frames}")


def episode_rng(kind: str, seed: int) -> np.random.Generator:
    """The random stream of (kind, seed): kinds never share streams."""
    return np.random.default_rng([int(seed), KINDS.index(kind)])


def num_clips(num_frames: int, config: WorldConfig) -> int:
    return -(-num_frames // config.clip_frames)


def build_truth(comp: Composite, layers: list[Layer], meta: dict, **extra: object) -> GroundTruth:
    """Ground truth from a composite and its layers (NaN centres where not in the scene)."""
    if layers:
        centres = np.stack([layer.centres for layer in layers], axis=1).astype(np.float32)
        sizes = np.stack([layer.sizes for layer in layers], axis=1).astype(np.float32)
    else:  # pragma: no cover - every kind has objects
        centres = np.zeros((len(comp.frames), 0, 2), np.float32)
        sizes = np.zeros((len(comp.frames), 0), np.float32)
    centres[~comp.in_scene] = np.nan
    return GroundTruth(
        ids=np.arange(len(layers), dtype=np.int64),
        names=[layer.name for layer in layers],
        shapes=[layer.shape for layer in layers],
        masks=comp.masks,
        present=comp.masks.any(axis=(2, 3)),
        in_scene=comp.in_scene,
        centres=centres,
        colours=comp.colours,
        sizes=sizes,
        background=comp.background,
        meta=meta,
        **extra,  # type: ignore[arg-type]
    )


def base_meta(kind: str, seed: int, config: WorldConfig, prompts: list[str]) -> dict:
    return {
        "kind": kind,
        "seed": int(seed),
        "split": split_of(seed),
        "config": config.to_dict(),
        "prompts": prompts,
    }


def change_points(values: np.ndarray) -> list[list]:
    """[[frame, value], ...] at every change of a per-frame value."""
    changes = np.flatnonzero(np.diff(values)) + 1
    starts = [0, *changes.tolist()] if len(values) else []
    return [[int(t), values[t].item()] for t in starts]
