"""Exact ground truth of an episode, and its files ``truth.npz`` + ``truth.json``.

Conventions: frames are (T, H, W, 3) uint8 RGB; a pixel (row i, column j) has its
centre at (x, y) = (j + 0.5, i + 0.5). For object k in frame t:

- ``masks[t, k]``: pixels where the object is visible (after occlusion by objects
  drawn later); inside it the frame equals ``colours[t, k]`` exactly, and outside
  every mask the frame equals ``background[t]`` exactly (before video compression);
- ``present[t, k]``: the object has at least one visible pixel;
- ``in_scene[t, k]``: the object is in the frame (it may be hidden by another);
- ``centres[t, k]``: (x, y) in px, NaN while not in the scene; ``sizes[t, k]``: radius
  (disc, ring), half-size (square), circumradius (triangle), head radius (face
  parts: their own radius), half-height (stick figure);
- ``colours[t, k]``: the flat colour after lighting; ``background[t]``: the frame
  without objects, after lighting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svi.errors import SviError

_ARRAYS = ("ids", "masks", "present", "in_scene", "centres", "colours", "sizes", "background")
_OPTIONAL = ("mouth_open", "joints")


@dataclass
class GroundTruth:
    ids: np.ndarray  # (K,) int64
    names: list[str]  # (K,) e.g. "red disc" (colour at first appearance)
    shapes: list[str]  # (K,)
    masks: np.ndarray  # (T, K, H, W) bool
    present: np.ndarray  # (T, K) bool
    in_scene: np.ndarray  # (T, K) bool
    centres: np.ndarray  # (T, K, 2) float32
    colours: np.ndarray  # (T, K, 3) uint8
    sizes: np.ndarray  # (T, K) float32
    background: np.ndarray  # (T, H, W, 3) uint8
    mouth_open: np.ndarray | None = None  # (T,) float32 in [0, 1], talking
    joints: np.ndarray | None = None  # (T, J, 2) float32 (x, y), dancing
    joint_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # kind, seed, split, prompts, events...

    @property
    def num_frames(self) -> int:
        return int(self.masks.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.masks.shape[1])

    def save(self, directory: str | Path, stem: str = "truth") -> tuple[Path, Path]:
        """Write ``<stem>.npz`` (arrays) and ``<stem>.json`` (names, prompts, config...)."""
        directory = Path(directory)
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays.update({n: getattr(self, n) for n in _OPTIONAL if getattr(self, n) is not None})
        npz_path, json_path = directory / f"{stem}.npz", directory / f"{stem}.json"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with open(npz_path, "wb") as handle:
                np.savez_compressed(handle, **arrays)
            info = {
                "ids": [int(i) for i in self.ids],
                "names": self.names,
                "shapes": self.shapes,
                "joint_names": self.joint_names,
                "num_frames": self.num_frames,
                **self.meta,
            }
            json_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise SviError(f"cannot write ground truth to {directory}: {exc.strerror}") from exc
        return npz_path, json_path

    @classmethod
    def load(cls, directory: str | Path, stem: str = "truth") -> GroundTruth:
        """Read what :meth:`save` wrote (no pickles are ever loaded)."""
        directory = Path(directory)
        npz_path, json_path = directory / f"{stem}.npz", directory / f"{stem}.json"
        for path in (npz_path, json_path):
            if not path.is_file():
                raise SviError(f"ground truth file not found: {path}")
        try:
            info = json.loads(json_path.read_text(encoding="utf-8"))
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise SviError(f"cannot read ground truth {npz_path}: {exc}") from exc
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise SviError(f"{npz_path} lacks arrays: {', '.join(missing)}")
        meta = {
            k: v
            for k, v in info.items()
            if k not in ("ids", "names", "shapes", "joint_names", "num_frames")
        }
        return cls(
            **{name: arrays[name] for name in _ARRAYS},
            names=list(info.get("names", [])),
            shapes=list(info.get("shapes", [])),
            mouth_open=arrays.get("mouth_open"),
            joints=arrays.get("joints"),
            joint_names=info.get("joint_names"),
            meta=meta,
        )
