"""Pixel conventions: uint8 RGB frames (numpy) <-> signed float tensors in [-1, 1].

Files, the world renderer and the video writer use ``uint8`` arrays ``(..., H, W, 3)``;
codecs and models use float tensors, channels first, in ``[-1, 1]``.
"""

from __future__ import annotations

import numpy as np
import torch


def to_signed(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames_uint8)).float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) in [-1, 1] -> uint8 (B, F, H, W, 3), rounded."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


def grey(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) float32 luminance in [0, 1] (Rec. 601)."""
    return (frames.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)) / 255.0


def colour_drift(frames: np.ndarray, reference: np.ndarray) -> float:
    """Distance of the mean colour of ``frames`` to that of ``reference`` (0..1 scale)."""
    a = frames.astype(np.float32).reshape(-1, 3).mean(0) / 255.0
    b = reference.astype(np.float32).reshape(-1, 3).mean(0) / 255.0
    return float(np.linalg.norm(a - b))
