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
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from svi.crop import crop_resize, fit_frames, random_crop, resize_frames
from svi.errors import SviError
from svi.pixels import to_signed

log = logging.getLogger(__name__)


@dataclass
class ClipBatch:
    frames: torch.Tensor  # (B, 3, F, H, W) in [-1, 1]
    anchors: torch.Tensor  # (B, 3, H, W) in [-1, 1], a frame from outside the window
    prompts: list[str]
    # SVI-Talk / SVI-Dance: the window's audio (LatentAudio, batch B) or pose input
    # (B, 3, F + tf - 1, H, W); None without a condition
    condition: Any = None


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
        condition: str | None = None,
        temporal_factor: int = 1,
    ) -> None:
        from svi.conditions.audio import audio_features
        from svi.world import WorldConfig, render_episode, split_seeds
        from svi.world.config import SAMPLE_RATE

        if episode_frames < num_frames + 1:
            raise SviError(f"episodes of {episode_frames} frames cannot hold {num_frames}+1")
        config = WorldConfig(size=size)
        self.clip_frames = config.clip_frames
        self.num_frames = num_frames
        seeds = split_seeds("train", pool_size, start=seed * pool_size)
        self.frames = np.empty((pool_size, episode_frames, size, size, 3), np.uint8)
        self.prompts: list[list[str]] = []
        self.condition, self.temporal_factor = condition, temporal_factor
        self.streams: list[torch.Tensor | np.ndarray] = []  # per episode: audio / pose stream
        with Progress(disable=not show_progress, transient=True) as bar:
            task = bar.add_task("rendering world pool", total=pool_size)
            for i, s in enumerate(seeds):
                ep = render_episode(kinds[i % len(kinds)], s, episode_frames, config)
                self.frames[i] = ep.frames
                self.prompts.append(list(ep.prompts))
                if condition == "audio":
                    self.streams.append(audio_features(ep.audio, SAMPLE_RATE, config.fps,
                                                       num_frames=episode_frames))  # fmt: skip
                elif condition == "pose":
                    self.streams.append(ep.pose_frames)
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
        condition = self._condition(eps, starts) if self.condition else None
        return ClipBatch(video, to_signed(anchors), prompts, condition)

    def _condition(self, eps: np.ndarray, starts: np.ndarray):
        """The windows' audio (frames s - 2 .. s + F + 1 of the episode's stream, clamped
        to the episode, as a clip at s of a generation reads) or pose input."""
        from svi.conditions.pose import pose_input
        from svi.conditions.windows import LatentAudio, frame_windows, latent_audio_windows

        f, tf = self.num_frames, self.temporal_factor
        pairs = zip(eps, starts, strict=True)
        if self.condition == "pose":
            return torch.cat([pose_input(self.streams[e][s : s + f], tf) for e, s in pairs])
        parts = [latent_audio_windows(frame_windows(self.streams[e], int(s), f), tf)
                 for e, s in pairs]  # fmt: skip
        return LatentAudio(torch.cat([p.first for p in parts]), torch.cat([p.later for p in parts]))


class FolderClips:
    """Random windows of the videos of a dataset folder, fitted to the clip size.

    Frames are centre-cropped to the clip's aspect and resized (Lanczos). With
    ``random_crop`` (the smallest crop scale, in (0, 1]) every sample instead takes its
    own crop of the clip's aspect - a side of ``[random_crop, 1]`` x the largest such
    crop, at a random position, the same for its clip and anchor - drawn from the
    sampling generator, so a resumed run crops exactly as an uninterrupted one.

    A video shorter than a clip repeats its last frame to the clip's length (as the
    reference does): one DEBUG line per video, one WARNING for the first.

    Videos are decoded on first use and kept (up to ``cache`` of them, least recently
    used dropped; with ``random_crop`` at the size the smallest crop needs). The prompt
    of a window is the one of its first new frame when the description is a stream
    (``" | "``-separated, spread evenly over the video).
    """

    def __init__(
        self,
        root: Path,
        num_frames: int,
        height: int,
        width: int,
        cache: int = 64,
        random_crop: float | None = None,
    ) -> None:
        from svi.data import VideoFolderDataset

        if random_crop is not None and not 0.0 < random_crop <= 1.0:
            raise SviError(
                f"random_crop (the smallest crop scale) must be in (0, 1], got {random_crop}"
            )
        self.dataset = VideoFolderDataset(root)
        if len(self.dataset) == 0:
            raise SviError(f"dataset {root} has no videos")
        self.num_frames, self.size, self.cache = num_frames, (height, width), cache
        self.random_crop = random_crop
        self.short: set[int] = set()  # indices of the videos shorter than a clip
        self._videos: dict[int, np.ndarray] = {}

    def _video(self, index: int) -> np.ndarray:
        """The decoded frames (T, h, w, 3) of video ``index``, fitted and padded to a clip."""
        from svi.video import read_video

        if index in self._videos:
            self._videos[index] = self._videos.pop(index)  # most recently used last
            return self._videos[index]
        path = self.dataset[index].path
        frames = read_video(path)
        h0, w0 = frames.shape[1:3]
        if self.random_crop is None:
            frames = fit_frames(frames, *self.size)
        else:  # kept only as large as the smallest crop needs (its side: the clip's)
            smallest = self.random_crop * min(h0 / self.size[0], w0 / self.size[1])
            if smallest > 1.0:
                frames = resize_frames(frames, round(h0 / smallest), round(w0 / smallest))
        if len(frames) < self.num_frames:
            frames = self._pad(index, frames)
        if len(self._videos) >= self.cache:
            self._videos.pop(next(iter(self._videos)))
        self._videos[index] = frames
        return frames

    def _pad(self, index: int, frames: np.ndarray) -> np.ndarray:
        """Repeat the last frame up to the clip length (logged once per video)."""
        if index not in self.short:
            path, n = self.dataset[index].path, len(frames)
            if not self.short:
                log.warning("%s has %d frames, fewer than a clip of %d: its last frame is "
                            "repeated to fill the clip, as for every shorter video (--verbose "
                            "lists them)", path, n, self.num_frames)  # fmt: skip
            log.debug("%s: %d frames, last one repeated to %d", path, n, self.num_frames)
            self.short.add(index)
        tail = np.repeat(frames[-1:], self.num_frames - len(frames), axis=0)
        return np.concatenate([frames, tail])

    def sample(self, batch: int, rng: np.random.Generator, motion_frames: int) -> ClipBatch:
        clips, anchors, prompts = [], [], []
        for index in rng.integers(0, len(self.dataset), size=batch):
            frames = self._video(int(index))
            t, f = len(frames), self.num_frames
            start = int(rng.integers(0, t - f + 1))
            anchor = int(rng.integers(0, t))
            window, still = frames[start : start + f], frames[anchor : anchor + 1]
            if self.random_crop is not None:
                box = random_crop(frames.shape[1], frames.shape[2], *self.size,
                                  self.random_crop, rng)  # fmt: skip
                window, still = (crop_resize(x, box, *self.size) for x in (window, still))
            clips.append(window)
            anchors.append(still[0])
            stream = self.dataset[int(index)].prompts
            prompts.append(stream[min((start + motion_frames) * len(stream) // t, len(stream) - 1)])
        video = to_signed(np.stack(clips)).movedim(1, 2)  # (B, 3, F, H, W)
        return ClipBatch(frames=video, anchors=to_signed(np.stack(anchors)), prompts=prompts)
