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
