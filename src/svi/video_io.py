"""Video, image and prompt-stream input/output.

Writing
-------
:class:`VideoWriter` streams a very long video to an MP4 file clip by clip. It is built
for crash safety: **after every** :meth:`VideoWriter.write` **returns, the bytes on disk
form a valid, playable MP4 holding exactly the frames written so far** (they are also
``fsync``-ed, so this holds after a power cut too, as far as the filesystem honours
``fsync``). A crash or ``kill -9`` after clip *k* never loses clips 1..k. If the process
dies *during* a write, clips 1..k-1 are intact and the file may end in a partial fragment
of clip k, which the readers here skip (a few players may complain about it).

How: the file is a fragmented MP4 (ISO BMFF: ``ftyp`` + an empty ``moov`` + one
``moof``/``mdat`` pair per fragment). Each clip is encoded by a fresh encoder and muxer
into memory (so every clip starts with a key frame and nothing stays buffered inside
FFmpeg between writes), then its fragments are appended to the file with their sequence
numbers and decode times (``tfdt``) re-stamped to continue the previous clips. Data
offsets are relative to each ``moof`` (``default_base_moof``), so fragments can be moved.
B-frames are disabled so decode and presentation times coincide. The finished file stays
a fragmented MP4 (standard ISO BMFF, as used for web streaming; checked here only with
FFmpeg/PyAV). Its ``moov`` lists no samples, so tools that only read the ``moov`` report
0 frames, which is why :func:`video_info` counts by decoding.

While writing, data goes to a sibling ``<stem>.partial<suffix>`` file
(:meth:`VideoWriter.partial_path_for`); :meth:`VideoWriter.close` renames it atomically
(``os.replace``) onto the target. If the ``with`` block exits with an exception, the
partial file is kept (it is a valid video of the finished clips) and the target is not
created.

Frame sizes: the first frame fixes the size; later frames of another size raise
:class:`~svi.errors.SviError`. Chroma-subsampled pixel formats (``yuv420p``, the
default, and ``yuv422p``) need even sizes: odd sizes raise ``SviError`` rather than being
silently padded or cropped (use ``pix_fmt="yuv444p"`` for odd sizes).

Reading
-------
:func:`iter_frames`, :func:`read_video`, :func:`read_image` and :func:`video_info` read
MP4/WebM/MKV/MOV/GIF through PyAV and still images (PNG/JPEG/WebP/BMP/TIFF) through
Pillow, always as ``uint8`` RGB arrays. Every problem with the file (missing, a directory,
empty, not a video, corrupt) is an ``SviError`` naming it. A file that is damaged part way
(for example cut off by a crash) yields the frames decodable before the damage (a
truncated fragmented MP4 simply ends after its last complete fragment; a decoder error
is logged as a warning); it is an error only if no frame at all can be decoded.

Prompt streams
--------------
:func:`read_prompt_stream` / :func:`parse_prompt_stream` read the list of per-clip
prompts from a Python-style list (``prompts = ["a", 'b',]``; parsed, never executed),
plain text (one prompt per line, ``#`` comments), JSON or YAML (strings or
``{"prompt": ..., "clips": n}`` / ``{"prompt": ..., "seconds": s}`` objects).
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import logging
import math
import os
import re
import struct
import warnings
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np
import yaml
from PIL import Image, ImageOps

from svi.errors import SviError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
"""Suffixes read as a single still image (through Pillow) rather than as a video."""

OUTPUT_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})
"""Suffixes :class:`VideoWriter` accepts for its target (the container is always MP4)."""

MAX_CLIPS_PER_ITEM = 100_000
"""Upper bound on the repeat count of one prompt-stream item (guards against typos)."""

_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"
_MIN_TIMESCALE = 10_000
_SUBSAMPLED_FORMATS = ("yuv420", "yuv422", "nv12", "nv21", "yuvj420", "yuvj422")
_FFMPEG_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError,)
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


# --------------------------------------------------------------------------- writing


class _Mp4LayoutError(RuntimeError):
    """The muxer produced MP4 boxes this module cannot re-stamp (a bug, not user error)."""


def _iter_boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, offset, size)`` of the ISO BMFF boxes laid out in ``data[start:end]``."""
    pos = start
    while pos < end:
        if end - pos < 8:
            raise _Mp4LayoutError(f"truncated box header at offset {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise _Mp4LayoutError(f"bad size {size} for box {kind!r} at offset {pos}")
        yield kind, pos, size
        pos += size


def _restamp_traf(data: bytearray, start: int, end: int, tick_offset: int) -> None:
    """Shift the decode time (``tfdt``) of one track fragment by ``tick_offset`` ticks."""
    for kind, pos, _size in _iter_boxes(data, start, end):
        if kind == b"tfhd":
            (flags,) = struct.unpack_from(">I", data, pos + 8)
            if flags & 0x1:  # base-data-offset-present: absolute file offsets
                raise _Mp4LayoutError("fragment uses absolute data offsets")
        elif kind == b"tfdt":
            if data[pos + 8] == 1:
                (old,) = struct.unpack_from(">Q", data, pos + 12)
                struct.pack_into(">Q", data, pos + 12, old + tick_offset)
            else:
                (old,) = struct.unpack_from(">I", data, pos + 12)
                if old + tick_offset >= 2**32:
                    raise _Mp4LayoutError("32-bit tfdt overflow")
                struct.pack_into(">I", data, pos + 12, old + tick_offset)


def _restamp_moof(data: bytearray, start: int, size: int, sequence: int, tick_offset: int) -> None:
    """Give one ``moof`` box a new sequence number and shift its decode times."""
    for kind, pos, child_size in _iter_boxes(data, start + 8, start + size):
        if kind == b"mfhd":
            struct.pack_into(">I", data, pos + 12, sequence)
        elif kind == b"traf":
            _restamp_traf(data, pos + 8, pos + child_size, tick_offset)


def _split_fragmented_mp4(
    data: bytearray, first_sequence: int, tick_offset: int
) -> tuple[bytes, bytes, bytes, int]:
    """Split one in-memory fragmented MP4 into init segment, its ``moov``, and fragments.

    The fragments come back re-stamped: sequence numbers from ``first_sequence`` on and
    decode times shifted by ``tick_offset``. Returns ``(init, moov, fragments, count)``.
    """
    init = bytearray()
    moov = b""
    fragments = bytearray()
    count = 0
    for kind, pos, size in _iter_boxes(data, 0, len(data)):
        if kind == b"moof":
            _restamp_moof(data, pos, size, first_sequence + count, tick_offset)
            count += 1
        if kind == b"moov":
            moov = bytes(data[pos : pos + size])
        if kind in (b"moof", b"mdat"):
            fragments += data[pos : pos + size]
        elif count == 0:
            init += data[pos : pos + size]
    if not moov or count == 0:
        raise _Mp4LayoutError("muxer output has no moov or no fragments")
    return bytes(init), moov, bytes(fragments), count


def _as_fps(fps: float | Fraction) -> Fraction:
    """Validate a frame rate and turn it into an exact fraction (e.g. 29.97 -> 2997/100)."""
    if isinstance(fps, bool) or not isinstance(fps, int | float | Fraction):
        raise SviError(f"fps must be a number, got {fps!r}")
    if not math.isfinite(float(fps)) or fps <= 0:
        raise SviError(f"fps must be positive, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _timescale_for(fps: Fraction) -> int:
    """MP4 track timescale in which one frame lasts a whole number of ticks."""
    return fps.numerator * max(1, math.ceil(_MIN_TIMESCALE / fps.numerator))


def _needs_even_size(pix_fmt: str) -> bool:
    return pix_fmt.startswith(_SUBSAMPLED_FORMATS)


def _check_frame(frame: Any, size: tuple[int, int] | None, where: str) -> tuple[int, int]:
    """Validate one (H, W, 3) uint8 frame against the expected (H, W); return its size."""
    if not isinstance(frame, np.ndarray):
        raise SviError(f"{where}: frames must be numpy arrays, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise SviError(f"{where}: frames must have shape (H, W, 3), got {frame.shape}")
    if frame.dtype != np.uint8:
        raise SviError(f"{where}: frames must be uint8 RGB, got dtype {frame.dtype}")
    height, width = int(frame.shape[0]), int(frame.shape[1])
    if size is not None and (height, width) != size:
        raise SviError(
            f"{where}: frame size {width}x{height} differs from the first frame's "
            f"{size[1]}x{size[0]}; all frames of a video must have one size"
        )
    return height, width


def _iter_clip_frames(frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Iterate the frames of one clip: (T, H, W, 3) array, one (H, W, 3) frame, or iterable."""
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            yield frames
            return
        if frames.ndim != 4:
            raise SviError(f"a clip must have shape (T, H, W, 3) or (H, W, 3), got {frames.shape}")
        yield from frames
        return
    yield from frames


class VideoWriter:
    """Streaming, crash-safe MP4 writer for long videos produced clip by clip.

    Use as a context manager::

        with VideoWriter("out.mp4", fps=16) as writer:
            for clip in clips:            # each (T, H, W, 3) uint8 RGB
                writer.write(clip)        # on disk and playable when this returns

    Args:
        path: target file (``.mp4``, ``.m4v`` or ``.mov``); it appears only on
            :meth:`close`. An existing target is replaced then.
        fps: frame rate (int, float or Fraction).
        crf: encoder constant rate factor; lower is better quality (0 with
            ``pix_fmt="yuv444p"`` is lossless in YUV; only RGB<->YUV rounding remains).
        codec: FFmpeg encoder name (``libx264``, ``libx265``, ...).
        pix_fmt: encoder pixel format; ``yuv420p`` (default, plays everywhere) needs even
            width and height.

    Raises:
        SviError: bad arguments, the output directory is missing or not writable, the
            target is a directory, or a ``.partial`` file of an earlier, interrupted run
            is in the way (it is never overwritten: move it away or delete it).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float | Fraction = 16,
        crf: int = 18,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
    ) -> None:
        self._path = Path(path)
        self._partial = self.partial_path_for(self._path)
        self._fps = _as_fps(fps)
        self._timescale = _timescale_for(self._fps)
        self._crf = _check_crf(crf)
        self._codec = _check_codec(codec)
        self._pix_fmt = _check_pix_fmt(pix_fmt)
        self._size: tuple[int, int] | None = None
        self._moov: bytes | None = None
        self._frames = 0
        self._fragments = 0
        self._closed = False
        self._file = _create_partial(self._path, self._partial)

    @staticmethod
    def partial_path_for(path: PathLike) -> Path:
        """The temporary file a writer for ``path`` writes to: ``<stem>.partial<suffix>``."""
        target = Path(path)
        return target.with_name(f"{target.stem}.partial{target.suffix}")

    @property
    def path(self) -> Path:
        """The target path the video is renamed to on :meth:`close`."""
        return self._path

    @property
    def partial_path(self) -> Path:
        """The temporary path holding the video while it is being written."""
        return self._partial

    @property
    def frames_written(self) -> int:
        """Number of frames safely on disk (complete clips only)."""
        return self._frames

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` has run."""
        return self._closed

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frames: np.ndarray | Iterable[np.ndarray]) -> None:
        """Append one clip and make it durable before returning.

        ``frames`` is a (T, H, W, 3) uint8 RGB array, a single (H, W, 3) frame, or an
        iterable of (H, W, 3) frames (consumed lazily; only the compressed clip is kept in
        memory). The clip is all or nothing: if it raises (bad frame, encoder or disk
        error), the file is left ending after the previous clip.
        """
        if self._closed:
            raise SviError(f"{self._path}: write() after the writer was closed")
        data, count, size = self._encode_clip(_iter_clip_frames(frames))
        self._append(data, count, size)

    def close(self) -> None:
        """Finish the video: rename the partial file onto :attr:`path` (atomically).

        Raises SviError if no frame was written (the empty partial file is removed and
        no target is created). Calling it again is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        self._file.close()
        if self._frames == 0:
            self._partial.unlink(missing_ok=True)
            raise SviError(f"{self._path}: no frames were written, so no video was created")
        try:
            os.replace(self._partial, self._path)
        except OSError as exc:
            raise SviError(
                f"{self._path}: cannot move finished video from {self._partial}: {exc}"
            ) from exc
        log.info("wrote %s (%d frames at %s fps)", self._path, self._frames, self._fps)

    def abort(self) -> None:
        """Stop without finalising: keep the partial file (a valid video) if it has frames."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        if self._frames == 0:
            self._partial.unlink(missing_ok=True)
            log.warning("video %s not written: stopped before any frame", self._path)
            return
        log.warning(
            "video %s not finalised; the %d frames written so far are in %s",
            self._path,
            self._frames,
            self._partial,
        )

    def _encode_clip(self, frames: Iterator[np.ndarray]) -> tuple[bytearray, int, tuple[int, int]]:
        """Encode one clip with a fresh encoder into an in-memory fragmented MP4."""
        buffer = io.BytesIO()
        size = self._size
        count = 0
        options = {"movflags": _MOVFLAGS, "video_track_timescale": str(self._timescale)}
        try:
            with av.open(buffer, "w", format="mp4", options=options) as container:
                stream: Any = None
                for frame in frames:
                    size = _check_frame(frame, size, str(self._path))
                    if stream is None:
                        stream = self._add_stream(container, size)
                    self._mux(container, stream.encode(self._to_av_frame(frame, count)))
                    count += 1
                if stream is None:
                    raise SviError(f"{self._path}: write() got an empty clip (no frames)")
                self._mux(container, stream.encode(None))
        except _FFMPEG_ERRORS as exc:
            raise SviError(f"{self._path}: encoding with {self._codec} failed: {exc}") from exc
        assert size is not None
        return bytearray(buffer.getvalue()), count, size

    def _add_stream(self, container: Any, size: tuple[int, int]) -> Any:
        height, width = size
        if _needs_even_size(self._pix_fmt) and (height % 2 or width % 2):
            raise SviError(
                f"{self._path}: frame size {width}x{height} is odd, but pix_fmt "
                f"{self._pix_fmt} needs even width and height (resize, crop or use yuv444p)"
            )
        options = {"crf": str(self._crf)}
        if self._codec == "libx265":
            options["x265-params"] = "log-level=error"
        stream = container.add_stream(self._codec, rate=self._fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, self._pix_fmt
        stream.codec_context.max_b_frames = 0
        return stream

    def _to_av_frame(self, frame: np.ndarray, index: int) -> av.VideoFrame:
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = index
        video_frame.time_base = 1 / self._fps
        return video_frame

    @staticmethod
    def _mux(container: Any, packets: Iterable[av.Packet]) -> None:
        for packet in packets:
            if not packet.duration:
                packet.duration = 1  # one frame, in the codec time base 1/fps
            container.mux(packet)

    def _append(self, data: bytearray, count: int, size: tuple[int, int]) -> None:
        """Re-stamp one encoded clip's fragments, append them and fsync the partial file."""
        ticks_per_frame = self._timescale * self._fps.denominator // self._fps.numerator
        try:
            init, moov, fragments, n_fragments = _split_fragmented_mp4(
                data, self._fragments + 1, self._frames * ticks_per_frame
            )
        except _Mp4LayoutError as exc:
            raise RuntimeError(f"{self._path}: unexpected MP4 layout from FFmpeg: {exc}") from exc
        if self._moov is not None and moov != self._moov:
            raise RuntimeError(f"{self._path}: encoder settings changed between clips")
        self._write_durably(fragments if self._moov is not None else init + fragments)
        self._moov = moov
        self._size = size
        self._frames += count
        self._fragments += n_fragments
        log.debug("%s: +%d frames (total %d)", self._partial, count, self._frames)

    def _write_durably(self, data: bytes) -> None:
        """Append ``data`` and fsync; on failure cut the file back to its previous end."""
        good_end = self._file.tell()
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view) :]
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._roll_back(good_end)
            raise SviError(f"{self._partial}: cannot write video data: {exc}") from exc

    def _roll_back(self, good_end: int) -> None:
        """Drop a half-written clip so the file again ends after the last complete one."""
        try:
            os.ftruncate(self._file.fileno(), good_end)
            self._file.seek(good_end)
        except OSError as exc:
            log.error("%s: cannot remove a half-written clip (%s); stopping", self._partial, exc)
            self.abort()


def _check_crf(crf: int) -> int:
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 63:
        raise SviError(f"crf must be an integer from 0 to 63, got {crf!r}")
    return crf


def _check_codec(codec: str) -> str:
    try:
        found = av.codec.Codec(codec, "w")
    except (ValueError, *_FFMPEG_ERRORS) as exc:
        raise SviError(f"unknown video encoder {codec!r}: {exc}") from exc
    if found.type != "video":
        raise SviError(f"{codec!r} is not a video encoder")
    return codec


def _check_pix_fmt(pix_fmt: str) -> str:
    try:
        av.VideoFormat(pix_fmt)
    except (ValueError, *_FFMPEG_ERRORS) as exc:
        raise SviError(f"unknown pixel format {pix_fmt!r}") from exc
    return pix_fmt


def _create_partial(target: Path, partial: Path) -> io.FileIO:
    """Check the output location and create the (new, empty) partial file."""
    if target.suffix.lower() not in OUTPUT_SUFFIXES:
        raise SviError(f"{target}: output must end in one of {sorted(OUTPUT_SUFFIXES)}")
    parent = target.parent
    if not parent.exists():
        raise SviError(f"{target}: output directory {parent} does not exist")
    if not parent.is_dir():
        raise SviError(f"{target}: {parent} is not a directory")
    if target.is_dir():
        raise SviError(f"{target}: output path is a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SviError(f"{target}: output directory {parent} is not writable")
    try:
        return io.FileIO(partial, "xb")  # unbuffered: write() goes straight to the OS
    except FileExistsError as exc:
        raise SviError(
            f"{target}: {partial} exists (left by an interrupted run?); move or delete it first"
        ) from exc
    except OSError as exc:
        raise SviError(f"{target}: cannot create {partial}: {exc}") from exc


def write_video(
    path: PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction = 16,
    crf: int = 18,
) -> Path:
    """Write a whole video in one go: a (T, H, W, 3) uint8 array or an iterable of frames.

    An iterable is consumed lazily (one clip for the whole video). Returns the path.
    On error, the target is not created (and the empty partial file is removed).
    """
    writer = VideoWriter(path, fps=fps, crf=crf)
    with writer:
        writer.write(frames)
    return writer.path


# --------------------------------------------------------------------------- reading


def _check_input_file(path: PathLike) -> Path:
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
    file = _check_input_file(path)
    try:
        with Image.open(file) as image:
            return _image_to_rgb(image)
    except _PIL_ERRORS as exc:
        raise SviError(f"{file}: not a readable image ({exc})") from exc


def _open_video(file: Path) -> tuple[Any, Any]:
    """Open ``file`` with PyAV; return the container and its first video stream."""
    try:
        container = av.open(str(file))
    except _FFMPEG_ERRORS as exc:
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
    except _FFMPEG_ERRORS as exc:
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
    file = _check_input_file(path)
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


def video_info(path: PathLike) -> dict[str, Any]:
    """Describe a video or image: ``frames``, ``fps``, ``width``, ``height``, ``duration``.

    ``frames`` comes from the container when it says; otherwise (fragmented MP4, WebM,
    MKV, GIF) the video is decoded to count them. Still images report 1 frame, fps 0.0
    and duration 0.0. ``codec`` names the codec (``"image"`` for still images).
    """
    file = _check_input_file(path)
    if _is_image_file(file):
        height, width = read_image(file).shape[:2]
        return {"frames": 1, "fps": 0.0, "width": width, "height": height,
                "duration": 0.0, "codec": "image"}  # fmt: skip
    container, stream = _open_video(file)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
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


# --------------------------------------------------------------------------- prompts

_SUFFIX_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".py": "python"}
_PROMPT_FORMATS = ("python", "text", "json", "yaml")
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*\s*(:[^=]*)?=\s*\[")
_DETECTED_HINT = (
    " (read as a Python-style list because the first prompt line starts with '[' or "
    "'name = ['; plain-text prompt files must not start that way)"
)
_ITEM_KEYS = frozenset({"prompt", "clips", "seconds"})
_NODE_NAMES = {
    "Call": "a function call",
    "Name": "a bare name",
    "Attribute": "an attribute access",
    "JoinedStr": "an f-string",
    "BinOp": "an expression",
    "Dict": "a dict",
    "List": "a nested list",
    "Tuple": "a tuple",
}


def read_prompt_stream(path: PathLike, seconds_per_clip: float | None = None) -> list[str]:
    """Read the per-clip prompts of a prompt-stream file (see :func:`parse_prompt_stream`).

    The format comes from the suffix (``.json``, ``.yaml``/``.yml``, ``.py``) or, for
    any other suffix (``.txt``, ...), from the content. The file must be UTF-8.
    """
    file = _check_input_file(path)
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SviError(
            f"{file}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from exc
    fmt = _SUFFIX_FORMATS.get(file.suffix.lower())
    return parse_prompt_stream(text, str(file), seconds_per_clip=seconds_per_clip, fmt=fmt)


def parse_prompt_stream(
    text: str,
    source: str = "<string>",
    *,
    seconds_per_clip: float | None = None,
    fmt: str | None = None,
) -> list[str]:
    """Parse a prompt stream into the list of prompts, one per clip (stripped, non-empty).

    Formats (``fmt``; detected from the content when None):

    * ``"python"``: an optional assignment (``prompts = ``, any name) and one list
      literal of string literals, any quotes, trailing comma and ``#`` comments allowed.
      Detected when the first non-comment line starts with ``[`` (and the text is not
      valid JSON) or with ``name = [``. It is parsed with :mod:`ast`, never executed;
      any element that is not a plain string literal is an error.
    * ``"json"`` / ``"yaml"``: a list (or ``{"prompts": [...]}``) whose items are strings
      or objects ``{"prompt": str, "clips": int >= 1}`` / ``{"prompt": str,
      "seconds": float > 0}``. ``clips: n`` repeats the prompt n times; ``seconds``
      repeats it ``max(1, round(seconds / seconds_per_clip))`` times and needs
      ``seconds_per_clip``. JSON is detected when the text starts with ``[`` and is
      valid JSON; YAML only by ``fmt``.
    * ``"text"``: one prompt per non-empty line; lines starting with ``#`` are comments.

    Errors (SviError) name ``source`` and the line: syntax errors (where the parser
    reports them), bad items, empty prompts, or no prompts at all.
    """
    if seconds_per_clip is not None and not seconds_per_clip > 0:
        raise SviError(f"seconds_per_clip must be positive, got {seconds_per_clip!r}")
    text = text.removeprefix("\ufeff")
    detected = fmt is None
    fmt = fmt or _detect_prompt_format(text)
    if fmt not in _PROMPT_FORMATS:
        raise SviError(f"{source}: unknown prompt format {fmt!r}; use one of {_PROMPT_FORMATS}")
    if fmt == "python":
        prompts = _parse_python_list(text, source, detected)
    elif fmt == "text":
        prompts = _parse_text_lines(text)
    else:
        prompts = _parse_structured(text, source, fmt, seconds_per_clip)
    if not prompts:
        raise SviError(f"{source}: no prompts found (the file is empty or only has comments)")
    return prompts


def _first_code_line(text: str) -> str | None:
    """The first line that is neither blank nor a ``#`` comment, stripped."""
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return None


def _detect_prompt_format(text: str) -> str:
    first = _first_code_line(text)
    if first is None:
        return "text"
    if first.startswith("["):
        try:
            json.loads(text)
        except ValueError:
            return "python"
        return "json"
    if _ASSIGNMENT.match(first):
        return "python"
    return "text"


def _parse_text_lines(text: str) -> list[str]:
    stripped = (line.strip() for line in text.split("\n"))
    return [line for line in stripped if line and not line.startswith("#")]


def _parse_python_list(text: str, source: str, detected: bool = False) -> list[str]:
    """Prompts from ``[name =] [ "...", ... ]`` by parsing (never running) the text.

    ``detected``: the format was guessed from the content, so a syntax error message
    explains why the text was read as a Python list.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning: invalid escape sequence
            tree = ast.parse(text, filename=source, mode="exec")
    except SyntaxError as exc:
        hint = _DETECTED_HINT if detected else ""
        raise SviError(
            f"{source}:{exc.lineno}: invalid prompt list syntax: {exc.msg}{hint}"
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SviError(f"{source}: invalid prompt list: {exc}") from exc
    if not tree.body:
        return []
    elements = _list_literal(tree.body[0], source).elts
    if len(tree.body) > 1:
        line = tree.body[1].lineno
        raise SviError(f"{source}:{line}: unexpected statement after the prompt list")
    return [_string_element(element, text, source) for element in elements]


def _list_literal(statement: ast.stmt, source: str) -> ast.List:
    """The list of ``[...]``, ``name = [...]`` or ``name: type = [...]``; else SviError."""
    value = _assigned_value(statement)
    if not isinstance(value, ast.List):
        raise SviError(
            f"{source}:{statement.lineno}: expected a list of strings like "
            '`prompts = ["a cat", "a dog"]`'
        )
    return value


def _assigned_value(statement: ast.stmt) -> ast.expr | None:
    """The expression of ``expr``, ``name = expr`` or ``name: type = expr``; else None."""
    if isinstance(statement, ast.Expr):
        return statement.value
    if isinstance(statement, ast.Assign):
        simple = all(isinstance(target, ast.Name) for target in statement.targets)
        return statement.value if simple else None
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.value
    return None


def _string_element(element: ast.expr, text: str, source: str) -> str:
    """A list element that must be a non-empty string literal; the prompt, stripped."""
    if isinstance(element, ast.Constant) and isinstance(element.value, str):
        prompt = element.value.strip()
        if not prompt:
            raise SviError(f"{source}:{element.lineno}: empty prompt")
        return prompt
    kind = _NODE_NAMES.get(type(element).__name__, "an expression")
    if isinstance(element, ast.Constant):
        kind = f"a constant of type {type(element.value).__name__}"
    snippet = (ast.get_source_segment(text, element) or "").replace("\n", " ")
    if len(snippet) > 40:
        snippet = snippet[:37] + "..."
    raise SviError(
        f"{source}:{element.lineno}: prompt list items must be string literals, "
        f"found {kind}: {snippet}"
    )


def _parse_structured(
    text: str, source: str, fmt: str, seconds_per_clip: float | None
) -> list[str]:
    """Prompts from JSON or YAML text (syntax checked, then each item expanded)."""
    data = _load_json(text, source) if fmt == "json" else _load_yaml(text, source)
    if data is None:
        return []
    items = data["prompts"] if isinstance(data, dict) and set(data) == {"prompts"} else data
    if not isinstance(items, list):
        raise SviError(
            f'{source}: expected a list of prompts (or {{"prompts": [...]}}), '
            f"got {type(data).__name__}"
        )
    lines = _item_lines(text)
    prompts: list[str] = []
    for index, item in enumerate(items):
        where = _item_location(source, lines, index)
        prompt, repeats = _expand_item(item, where, seconds_per_clip)
        prompts.extend([prompt] * repeats)
    return prompts


def _load_json(text: str, source: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SviError(
            f"{source}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
        ) from exc


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise SviError(f"{source}{line}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise SviError(f"{source}: invalid YAML: {exc}") from exc


def _item_lines(text: str) -> list[int] | None:
    """1-based start line of each top-level list item (also for JSON), if YAML can tell."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if isinstance(node, yaml.MappingNode) and len(node.value) == 1:
        node = node.value[0][1]  # {"prompts": [...]}
    if not isinstance(node, yaml.SequenceNode):
        return None
    return [child.start_mark.line + 1 for child in node.value]


def _item_location(source: str, lines: list[int] | None, index: int) -> str:
    if lines is not None and index < len(lines):
        return f"{source}:{lines[index]}"
    return f"{source} (item {index + 1})"


def _expand_item(item: Any, where: str, seconds_per_clip: float | None) -> tuple[str, int]:
    """One JSON/YAML item as ``(prompt, repeat count)``."""
    if isinstance(item, str):
        return _non_empty_prompt(item, where), 1
    if not isinstance(item, dict):
        raise SviError(
            f'{where}: items must be strings or {{"prompt": ..., "clips": n}} objects, '
            f"got {type(item).__name__}"
        )
    unknown = sorted(str(key) for key in item if key not in _ITEM_KEYS)
    if unknown:
        raise SviError(f"{where}: unknown key(s) {unknown}; allowed: prompt, clips, seconds")
    if not isinstance(item.get("prompt"), str):
        raise SviError(f'{where}: item needs a "prompt" string')
    prompt = _non_empty_prompt(item["prompt"], where)
    return prompt, _item_repeats(item, where, seconds_per_clip)


def _non_empty_prompt(prompt: str, where: str) -> str:
    stripped = prompt.strip()
    if not stripped:
        raise SviError(f"{where}: empty prompt")
    return stripped


def _item_repeats(item: dict[str, Any], where: str, seconds_per_clip: float | None) -> int:
    """Repeat count from ``clips`` or ``seconds`` (default 1)."""
    if "clips" in item and "seconds" in item:
        raise SviError(f'{where}: give either "clips" or "seconds", not both')
    if "clips" in item:
        clips = item["clips"]
        if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
            raise SviError(f'{where}: "clips" must be an integer >= 1, got {clips!r}')
        repeats = clips
    elif "seconds" in item:
        repeats = _seconds_to_clips(item["seconds"], where, seconds_per_clip)
    else:
        repeats = 1
    if repeats > MAX_CLIPS_PER_ITEM:
        raise SviError(f"{where}: {repeats} clips is more than the limit {MAX_CLIPS_PER_ITEM}")
    return repeats


def _seconds_to_clips(seconds: Any, where: str, seconds_per_clip: float | None) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise SviError(f'{where}: "seconds" must be a number > 0, got {seconds!r}')
    if not (math.isfinite(seconds) and seconds > 0):
        raise SviError(f'{where}: "seconds" must be a number > 0, got {seconds!r}')
    if seconds_per_clip is None:
        raise SviError(
            f'{where}: "seconds" needs the clip duration (seconds_per_clip) to convert to '
            'clips; use "clips" instead'
        )
    return max(1, round(seconds / seconds_per_clip))
