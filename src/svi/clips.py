"""Training clips: (frames, prompt, anchor) samples for the training loop.

:class:`WorldClips` renders a pool of procedural-world episodes from TRAIN-split
seeds once, then samples random windows from it. Sampling is driven by a numpy
``Generator`` whose state is checkpointed, so the data position resumes exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress

from svi.errors import SviError

log = logging.getLogger(__name__)


@dataclass
class ClipBatch:
    frames: torch.Tensor  # (B, 3, F, H, W) in [-1, 1]
    anchors: torch.Tensor  # (B, 3, H, W) in [-1, 1], a frame from outside the window
    prompts: list[str]


def to_signed(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames_uint8)).float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


class WorldClips:
    """Random clip windows from a pool of world episodes of the train split."""

    def __init__(
        self,
        kinds: tuple[str, ...],
        pool_size: int,
        episode_frames: int,
        num_frames: int,
        size: int,
        seed: int = 0,
        show_progress: bool = True,
    ) -> None:
        from svi.world import WorldConfig, render_episode, split_seeds

        if episode_frames < num_frames + 1:
            raise SviError(f"episodes of {episode_frames} frames cannot hold {num_frames}+1")
        config = WorldConfig(size=size)
        self.clip_frames = config.clip_frames
        self.num_frames = num_frames
        seeds = split_seeds("train", pool_size, start=seed * pool_size)
        self.frames = np.empty((pool_size, episode_frames, size, size, 3), np.uint8)
        self.prompts: list[list[str]] = []
        with Progress(disable=not show_progress, transient=True) as bar:
            task = bar.add_task("rendering world pool", total=pool_size)
            for i, s in enumerate(seeds):
                ep = render_episode(kinds[i % len(kinds)], s, episode_frames, config)
                self.frames[i] = ep.frames
                self.prompts.append(list(ep.prompts))
                bar.advance(task)
        log.info("world pool: %d episodes x %d frames of %s", pool_size, episode_frames, kinds)

    def distinct_prompts(self) -> list[str]:
        return sorted({p for ps in self.prompts for p in ps})

    def sample(self, batch: int, rng: np.random.Generator, motion_frames: int) -> ClipBatch:
        """``batch`` windows of ``num_frames``; the prompt is the one of the first new frame."""
        n, t = self.frames.shape[:2]
        f = self.num_frames
        eps = rng.integers(0, n, size=batch)
        starts = rng.integers(0, t - f + 1, size=batch)
        anchor_t = rng.integers(0, t, size=batch)
        clips = np.stack([self.frames[e, s : s + f] for e, s in zip(eps, starts, strict=True)])
        anchors = self.frames[eps, anchor_t]
        prompts = []
        for e, s in zip(eps, starts, strict=True):
            ps = self.prompts[e]
            prompts.append(ps[min((s + motion_frames) // self.clip_frames, len(ps) - 1)])
        video = to_signed(clips).movedim(1, 2)  # (B, F, 3, H, W) -> (B, 3, F, H, W)
        return ClipBatch(frames=video, anchors=to_signed(anchors), prompts=prompts)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) in [-1, 1] -> uint8 (B, F, H, W, 3), rounded."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()
