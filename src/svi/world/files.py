"""Writing episodes and datasets to disk.

One episode (``write_episode``): ``video.mp4``, ``prompts.txt`` (one prompt per clip),
``truth.npz`` + ``truth.json``, and ``audio.wav`` (talking, 16-bit PCM mono 16 kHz)
or ``pose.mp4`` (dancing). With a ``stem`` the names become ``<stem>.mp4``,
``<stem>_prompts.txt``, ``<stem>_truth.npz``/``.json``, ``<stem>.wav``,
``<stem>_pose.mp4`` - the per-video files of a dataset.

A dataset (``write_dataset``) uses the reference training layout read by
:class:`svi.data.VideoFolderDataset`: ``<out>/<kind>/<kind>.csv`` with the header
``Video Title,Video Description,Video URL,Download URL,Filename``; the description
is the prompt stream joined by ``" | "`` (a single prompt when the video is one
clip, or for the consistent kind, whose clips share one prompt); both URL columns
are ``world://<kind>/<seed>``.
"""

from __future__ import annotations

import csv
import logging
import math
import wave
from pathlib import Path

import numpy as np

from svi.errors import SviError
from svi.world.config import KINDS, SAMPLE_RATE, WorldConfig
from svi.world.episode import Episode
from svi.world.render import render_episode
from svi.world.splits import split_seeds

log = logging.getLogger(__name__)

MAX_EPISODE_FRAMES = 20_000  # an episode is rendered in memory (frames and truth)
MAX_VIDEOS = 100_000
CSV_HEADER = ("Video Title", "Video Description", "Video URL", "Download URL", "Filename")
PROMPT_SEPARATOR = " | "


def seconds_to_frames(seconds: float, fps: int) -> int:
    """Frames in ``seconds`` at ``fps`` (at least 1, at most :data:`MAX_EPISODE_FRAMES`);
    non-positive seconds are an error."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise SviError(f"--seconds must be a positive number, got {seconds}")
    frames = max(1, round(seconds * fps))
    if frames > MAX_EPISODE_FRAMES:
        raise SviError(f"--seconds {seconds:g} at {fps} fps is {frames} frames; a world episode "
                       f"has at most {MAX_EPISODE_FRAMES} (it is rendered in memory)")  # fmt: skip
    return frames


def check_video_size(config: WorldConfig) -> None:
    """The episode's mp4 (yuv420p) needs an even frame size."""
    if config.size % 2:
        raise SviError(f"--size {config.size} is odd; a world video needs an even size")


def prepare_dir(path: Path) -> Path:
    """Create ``path`` and check it is writable (SviError otherwise)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".svi-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SviError(f"cannot write to {path}: {exc.strerror or exc}") from exc
    return path


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM mono wav of float audio in [-1, 1]."""
    pcm = np.clip(np.rint(np.asarray(audio, np.float64) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(audio float32 in [-1, 1], sample rate) of a 16-bit PCM mono wav."""
    try:
        with wave.open(str(path), "rb") as handle:
            if handle.getsampwidth() != 2 or handle.getnchannels() != 1:
                raise SviError(f"{path}: expected 16-bit mono PCM wav")
            rate = handle.getframerate()
            data = handle.readframes(handle.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise SviError(f"cannot read wav {path}: {exc}") from exc
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0, rate


def write_episode(episode: Episode, out: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Write an episode's files into ``out``; returns {role: path}."""
    from svi.video import write_video

    check_video_size(episode.config)
    out = prepare_dir(Path(out))

    def name(plain: str, suffix: str) -> Path:
        return out / (plain if stem is None else f"{stem}{suffix}")

    fps = episode.config.fps
    paths = {"video": name("video.mp4", ".mp4")}
    write_video(paths["video"], episode.frames, fps=fps)
    paths["prompts"] = name("prompts.txt", "_prompts.txt")
    paths["prompts"].write_text("\n".join(episode.prompts) + "\n", encoding="utf-8")
    truth_npz, truth_json = episode.truth.save(out, "truth" if stem is None else f"{stem}_truth")
    paths["truth"], paths["truth_json"] = truth_npz, truth_json
    if episode.audio is not None:
        paths["audio"] = write_wav(name("audio.wav", ".wav"), episode.audio)
    if episode.pose_frames is not None:
        paths["pose"] = name("pose.mp4", "_pose.mp4")
        write_video(paths["pose"], episode.pose_frames, fps=fps)
    log.debug("wrote %s episode %d to %s", episode.kind, episode.seed, out)
    return paths


def description(episode: Episode) -> str:
    """The CSV description: the prompt stream joined by ' | ' (repeats collapsed)."""
    prompts = episode.prompts
    if all(p == prompts[0] for p in prompts):
        return prompts[0]
    return PROMPT_SEPARATOR.join(prompts)


def write_dataset(
    out: str | Path,
    kind: str,
    videos: int,
    seconds: float,
    split: str = "train",
    config: WorldConfig = WorldConfig(),
    start: int = 0,
    progress: bool = True,
) -> Path:
    """Render ``videos`` episodes of ``split`` seeds into the reference layout; returns the CSV."""
    from rich.progress import Progress

    if kind not in KINDS:
        raise SviError(f"unknown world kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not 1 <= videos <= MAX_VIDEOS:
        raise SviError(f"--videos must be in 1..{MAX_VIDEOS}, got {videos}")
    if start < 0:
        raise SviError(f"--start must be >= 0, got {start}")
    check_video_size(config)
    num_frames = seconds_to_frames(seconds, config.fps)
    seeds = split_seeds(split, videos, start)  # a bad split or start: before any folder
    folder = prepare_dir(Path(out) / kind)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{kind} {split}", total=len(seeds))
        for seed in seeds:
            episode = render_episode(kind, seed, num_frames, config)
            stem = f"{kind}_{seed:06d}"
            write_episode(episode, folder, stem)
            url = f"world://{kind}/{seed}"
            rows.append((stem, description(episode), url, url, f"{stem}.mp4"))
            bar.advance(task)
    csv_path = folder / f"{kind}.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    log.info("wrote %d %s videos (%s split) to %s", len(rows), kind, split, folder)
    return csv_path


def contact_sheet(
    episode: Episode, path: str | Path, columns: int = 8, max_frames: int = 32, scale: int = 4
) -> Path:
    """A PNG grid of evenly spaced frames (pose frames underneath for dancing)."""
    from PIL import Image

    if columns < 1:
        raise SviError(f"--columns must be >= 1, got {columns}")
    count = min(max_frames, episode.num_frames)
    columns = min(columns, count)  # wider would only add empty cells
    picks = np.linspace(0, episode.num_frames - 1, count).round().astype(int)
    sources = [episode.frames] + ([episode.pose_frames] if episode.pose_frames is not None else [])
    size = episode.config.size
    rows = -(-count // columns)
    sheet = np.zeros((rows * len(sources) * size, columns * size, 3), np.uint8)
    for i, t in enumerate(picks):
        row, col = divmod(i, columns)
        for j, source in enumerate(sources):
            y = (row * len(sources) + j) * size
            sheet[y : y + size, col * size : (col + 1) * size] = source[t]
    image = Image.fromarray(sheet).resize(
        (sheet.shape[1] * scale, sheet.shape[0] * scale), Image.Resampling.NEAREST
    )
    path = Path(path)
    prepare_dir(path.parent)
    try:
        image.save(path)
    except (OSError, ValueError) as exc:
        raise SviError(f"cannot write {path}: {exc}") from exc
    return path
