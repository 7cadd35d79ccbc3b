"""Training clips: (frames, prompt, anchor) samples for the training loop.

:class:`WorldClips` renders a pool of procedural-world episodes from TRAIN-split
seeds once, then samples random windows from it. :class:`FolderClips` samples windows
of real videos from a dataset folder in the reference layout
(``root/<category>/<category>.csv`` + mp4 files, see :mod:`svi.data`). Sampling is
driven by a numpy ``Generator`` whose state is checkpointed, so the data position
resumes exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from svi.errors import SviError
from svi.pixels import to_signed

log = logging.getLogger(__name__)


@dataclass
class ClipBatch:
    frames: torch.Tensor  # (B, 3, F, H, W) in [-1, 1]
    anchors: torch.Tensor  # (B, 3, H, W) in [-1, 1], a frame from outside the window
    prompts: list[str]


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


class FolderClips:
    """Random windows of the videos of a dataset folder, fitted to the model's size.

    Videos are decoded on first use and kept (up to ``cache`` of them, least recently
    used dropped). The prompt of a window is the one of its first new frame when the
    description is a stream (``" | "``-separated, spread evenly over the video).
    """

    def __init__(
        self, root: Path, num_frames: int, height: int, width: int, cache: int = 64
    ) -> None:
        from svi.data import VideoFolderDataset

        self.dataset = VideoFolderDataset(root)
        if len(self.dataset) == 0:
            raise SviError(f"dataset {root} has no videos")
        self.num_frames, self.size, self.cache = num_frames, (height, width), cache
        self._videos: dict[int, np.ndarray] = {}

    def _video(self, index: int) -> np.ndarray:
        from svi.starts import fit_image
        from svi.video import read_video

        if index in self._videos:
            self._videos[index] = self._videos.pop(index)  # most recently used last
            return self._videos[index]
        record = self.dataset[index]
        frames = np.stack([fit_image(f, *self.size) for f in read_video(record.path)])
        if len(frames) < self.num_frames:
            raise SviError(f"{record.path} has {len(frames)} frames; clips need {self.num_frames}")
        if len(self._videos) >= self.cache:
            self._videos.pop(next(iter(self._videos)))
        self._videos[index] = frames
        return frames

    def sample(self, batch: int, rng: np.random.Generator, motion_frames: int) -> ClipBatch:
        clips, anchors, prompts = [], [], []
        for index in rng.integers(0, len(self.dataset), size=batch):
            frames = self._video(int(index))
            t, f = len(frames), self.num_frames
            start = int(rng.integers(0, t - f + 1))
            anchor = int(rng.integers(0, t))
            clips.append(frames[start : start + f])
            anchors.append(frames[anchor])
            stream = self.dataset[int(index)].prompts
            prompts.append(stream[min((start + motion_frames) * len(stream) // t, len(stream) - 1)])
        video = to_signed(np.stack(clips)).movedim(1, 2)  # (B, 3, F, H, W)
        return ClipBatch(frames=video, anchors=to_signed(np.stack(anchors)), prompts=prompts)
