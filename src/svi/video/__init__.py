"""Video and image input/output.

- :mod:`svi.video.writer`: :class:`VideoWriter`, the streaming, crash-safe and resumable
  MP4 writer of long videos (clip by clip), and :func:`write_video`;
- :mod:`svi.video.reader`: :func:`iter_frames`, :func:`read_video`, :func:`read_image`
  :func:`video_info` and :func:`video_fps` for MP4/WebM/MKV/MOV/GIF and still images;
- :mod:`svi.video.mp4`: the fragmented-MP4 box surgery behind the writer.

Prompt-stream files are read by :mod:`svi.prompt_stream`.
"""

from __future__ import annotations

from svi.video.reader import (
    IMAGE_SUFFIXES,
    PathLike,
    iter_frames,
    read_image,
    read_video,
    video_fps,
    video_info,
)
from svi.video.writer import OUTPUT_SUFFIXES, VideoWriter, write_video

__all__ = [
    "IMAGE_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "PathLike",
    "VideoWriter",
    "iter_frames",
    "read_image",
    "read_video",
    "video_fps",
    "video_info",
    "write_video",
]
