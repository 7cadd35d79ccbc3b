"""Reading videos and images as uint8 RGB arrays.

:func:`iter_frames`, :func:`read_video`, :func:`read_image` and :func:`video_info` read
MP4/WebM/MKV/MOV/GIF through PyAV and still images (PNG/JPEG/WebP/BMP/TIFF) through
Pillow, always as ``uint8`` RGB arrays. Every problem with the file (missing, a directory,
empty, not a video, corrupt) is an ``SviError`` naming it. A file that is damaged part way
(for example cut off by a crash) yields the frames decodable before the damage (a
truncated fragmented MP4 simply ends after its last complete fragment; a decoder error
is logged as a warning); it is an error only if no frame at all can be decoded.
"""

from __future__ import annotations

import itertools
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps

from svi.errors import SviError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
"""Suffixes read as a single still image (through Pillow) rather than as a video."""

_PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


def check_input_file(path: PathLike) -> Path:
    """Return ``path`` as a Path if it is an existing, non-empty regular file."""
    file = Path(path)
    if not file.exists():
        raise SviError(f"{file}: file not found")
    if file.is_dir():
        raise SviError(f"{file}: is a directory, expected a file")
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise SviError(f"{file}: cannot read: {exc}") from exc
    if size == 0:
        raise SviError(f"{file}: file is empty")
    return file


def _image_to_rgb(image: Image.Image) -> np.ndarray:
    """Upright RGB uint8 pixels of a Pillow image (alpha dropped, palettes expanded)."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        gray = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def read_image(path: PathLike) -> np.ndarray:
    """Read a still image (first frame of animated ones) as (H, W, 3) uint8 RGB.

    Alpha is dropped (not composited), palette and grey images are expanded to RGB,
    16-bit images are reduced to 8 bits and the EXIF orientation is applied.
    """
    file = check_input_file(path)
    try:
        with warnings.catch_warnings():  # a big picture is fitted to the clip size; one
            # past Pillow's hard limit (twice the warning's) is refused below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                return _image_to_rgb(image)
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise SviError(f"{file}: the picture has more than {limit:,} pixels (Pillow's limit "
                       "against decompression bombs); scale it down first") from None  # fmt: skip
    except _PIL_ERRORS as exc:
        raise SviError(f"{file}: not a readable image ({exc})") from exc


def _open_video(file: Path) -> tuple[Any, Any]:
    """Open ``file`` with PyAV; return the container and its first video stream."""
    try:
        container = av.open(str(file))
    except av.FFmpegError as exc:
        raise SviError(f"{file}: not a readable video or image ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise SviError(f"{file}: contains no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _decode_frames(container: Any, stream: Any, file: Path) -> Iterator[Any]:
    """Decode every frame of ``stream``; stop with a warning at damage after frame 1."""
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.FFmpegError as exc:
        if count == 0:
            raise SviError(f"{file}: cannot decode video ({exc})") from exc
        log.warning("%s: damaged after frame %d, stopped reading there (%s)", file, count, exc)
    finally:
        container.close()
    if count == 0:
        raise SviError(f"{file}: no decodable video frames")


def _is_image_file(file: Path) -> bool:
    return file.suffix.lower() in IMAGE_SUFFIXES


def iter_frames(path: PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video (or the one frame of a still image) as (H, W, 3) uint8.

    Problems with the file itself (missing, empty, not a video) raise SviError right
    away; a file damaged part way yields the frames before the damage (decoder errors are
    logged as warnings) and raises SviError only if not even one frame decodes.
    """
    file = check_input_file(path)
    if _is_image_file(file):
        return iter([read_image(file)])
    container, stream = _open_video(file)
    frames = _decode_frames(container, stream, file)
    return (frame.to_ndarray(format="rgb24") for frame in frames)


def read_video(path: PathLike, max_frames: int | None = None) -> np.ndarray:
    """Read (up to ``max_frames``) frames of a video or image as a (T, H, W, 3) uint8 array."""
    if max_frames is not None and max_frames < 1:
        raise SviError(f"max_frames must be at least 1, got {max_frames}")
    frames = iter_frames(path)
    try:
        return np.stack(list(itertools.islice(frames, max_frames)))
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _stream_fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def video_fps(path: PathLike) -> float:
    """The frame rate a video declares, without decoding it (0.0 for still images or
    when the container does not say)."""
    file = check_input_file(path)
    if _is_image_file(file):
        return 0.0
    container, stream = _open_video(file)
    try:
        return _stream_fps(stream)
    finally:
        container.close()


def video_info(path: PathLike) -> dict[str, Any]:
    """Describe a video or image: ``frames``, ``fps``, ``width``, ``height``, ``duration``.

    ``frames`` comes from the container when it says; otherwise (fragmented MP4, WebM,
    MKV, GIF) the video is decoded to count them. Still images report 1 frame, fps 0.0
    and duration 0.0. ``codec`` names the codec (``"image"`` for still images).
    """
    file = check_input_file(path)
    if _is_image_file(file):
        height, width = read_image(file).shape[:2]
        return {"frames": 1, "fps": 0.0, "width": width, "height": height,
                "duration": 0.0, "codec": "image"}  # fmt: skip
    container, stream = _open_video(file)
    fps = _stream_fps(stream)
    info = {
        "frames": int(stream.frames),
        "fps": fps,
        "width": int(stream.codec_context.width),
        "height": int(stream.codec_context.height),
        "codec": str(stream.codec_context.name),
    }
    if info["frames"] <= 0:
        info["frames"] = sum(1 for _ in _decode_frames(container, stream, file))
    else:
        container.close()
    info["duration"] = info["frames"] / fps if fps else 0.0
    return info
