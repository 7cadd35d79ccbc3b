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

Resuming: each clip's fragments are followed by a small ``free`` box (ignored by players)
holding a *clip record*: clip number, frame counts, next fragment sequence number, the
clip's byte length and CRC-32. The first clip is preceded by a ``free`` box with the
writer settings and frame size. :meth:`VideoWriter.resume` reopens the partial file of an
interrupted run, keeps everything up to the last clip record that checks out (a clip
without its record was cut off by the crash and is dropped), optionally cuts back to the
frame count the caller recorded, and continues appending.
:meth:`VideoWriter.discard_partial` deletes a leftover partial file instead.

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
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
_HEAD_MAGIC = b"svi-head"
_CLIP_MAGIC = b"svi-clip"
_HEAD_FORMAT = 1
# magic, clip number (1-based), frames in the clip, frames up to and including it,
# sequence number of the next fragment, byte length of the clip's fragments, their CRC-32
_CLIP_RECORD = struct.Struct(">8sIIQIQI")
_READ_CHUNK = 1 << 20
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


def _free_box(payload: bytes) -> bytes:
    """A top-level ``free`` box (skipped by every MP4 reader) carrying ``payload``."""
    return struct.pack(">I4s", 8 + len(payload), b"free") + payload


def _moov_core(moov: bytes) -> bytes:
    """A ``moov`` box without its ``udta`` (which only names the muxer and its version)."""
    return b"".join(
        moov[pos : pos + size]
        for kind, pos, size in _iter_boxes(moov, 8, len(moov))
        if kind != b"udta"
    )


@dataclass(frozen=True)
class _ClipEnd:
    """Where the file may end: after ``clips`` complete clips holding ``frames`` frames."""

    offset: int
    frames: int
    clips: int
    next_sequence: int
    data_start: int = 0
    data_length: int = 0
    crc: int = 0


_EMPTY = _ClipEnd(offset=0, frames=0, clips=0, next_sequence=1)


@dataclass
class _Scan:
    """What :func:`_scan_partial` found: settings, stream header and the clip ends."""

    settings: dict[str, Any] | None
    moov: bytes | None
    ends: list[_ClipEnd]
    size: int


class _NotOurs(Exception):
    """The partial file was not written by :class:`VideoWriter` (carries the reason)."""


def _box_at(file: io.FileIO, pos: int, end: int) -> tuple[bytes, int] | None:
    """``(type, size)`` of the top-level box at ``pos``; None if it runs past ``end``.

    Also None for a box header too short to read. A box of size 0 ("up to the end of the
    file"), which this writer never writes, counts as malformed: ``(type, 0)``.
    """
    file.seek(pos)
    head = file.read(min(16, end - pos))
    if len(head) < 8:
        return None
    size, kind = struct.unpack_from(">I4s", head)
    header = 8
    if size == 1:
        if len(head) < 16:
            return None
        (size,) = struct.unpack_from(">Q", head, 8)
        header = 16
    if size < header:
        return kind, 0
    if pos + size > end:
        return None
    return kind, size


def _read_at(file: io.FileIO, pos: int, size: int) -> bytes:
    file.seek(pos)
    data = bytearray()
    while len(data) < size:
        chunk = file.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _crc_of(file: io.FileIO, start: int, size: int) -> int:
    crc = 0
    file.seek(start)
    left = size
    while left > 0:
        chunk = file.read(min(_READ_CHUNK, left))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    return crc


def _scan_header(file: io.FileIO, end: int) -> tuple[dict[str, Any] | None, bytes | None, int]:
    """Check ``ftyp``, ``moov`` and the settings box; return ``(settings, moov, end)``.

    Settings and moov are None when the file stops inside them (a crash during the first
    write): then nothing in it is usable. Raises _NotOurs for any other layout (a box cut
    off by the end of the file must still start like the expected one).
    """
    pos = 0
    moov = b""
    settings: dict[str, Any] | None = None
    for expected in (b"ftyp", b"moov", b"free"):
        box = _box_at(file, pos, end)
        if box is None:
            head = _read_at(file, pos, min(16, end - pos))
            payload = head[8:]  # the start of the settings box's payload, if it is one
            if len(head) >= 8 and head[4:8] != expected:
                raise _NotOurs(f"found a {head[4:8]!r} box where a {expected!r} box was expected")
            if expected == b"free" and not _HEAD_MAGIC.startswith(payload):
                raise _NotOurs("it has no svi settings box")
            return None, None, 0
        kind, size = box
        if kind != expected or size == 0:
            raise _NotOurs(f"found a {kind!r} box where a {expected!r} box was expected")
        if kind == b"moov":
            moov = _read_at(file, pos, size)
            try:
                _moov_core(moov)
            except _Mp4LayoutError as exc:
                raise _NotOurs(f"its moov box is malformed ({exc})") from exc
        elif kind == b"free":
            payload = _read_at(file, pos + 8, size - 8)
            if not payload.startswith(_HEAD_MAGIC):
                raise _NotOurs("it has no svi settings box")
            try:
                settings = json.loads(payload[len(_HEAD_MAGIC) :])
            except ValueError as exc:
                raise _NotOurs(f"its settings box is unreadable ({exc})") from exc
            if not isinstance(settings, dict) or settings.get("format") != _HEAD_FORMAT:
                raise _NotOurs("its settings box has an unknown format")
        pos += size
    return settings, moov, pos


def _scan_partial(file: io.FileIO) -> _Scan:
    """Find every point at which the partial file ends right after a complete clip.

    Walks the top-level boxes (reading only their headers, plus the clip records):
    ``moof``/``mdat`` pairs belong to the clip in progress, and a clip record that agrees
    with what precedes it (clip number, frame total, fragment count, byte length) closes
    it. The walk stops at the first box that is cut off or out of place; whatever follows
    the last good record is a clip the crash interrupted. The last clip's CRC-32 is
    verified too (earlier clips were fsynced before the next one was started).
    """
    end = os.fstat(file.fileno()).st_size
    ends = [_EMPTY]
    if end == 0:
        return _Scan(None, None, ends, 0)
    settings, moov, pos = _scan_header(file, end)
    if settings is None:
        return _Scan(None, None, ends, end)
    clip_start, moofs = pos, 0
    while (box := _box_at(file, pos, end)) is not None:
        kind, size = box
        if size == 0:
            break
        if kind in (b"moof", b"mdat"):
            moofs += kind == b"moof"
        elif kind == b"free" and size == 8 + _CLIP_RECORD.size:
            record = _CLIP_RECORD.unpack(_read_at(file, pos + 8, _CLIP_RECORD.size))
            magic, clip, frames, total, next_sequence, length, crc = record
            last = ends[-1]
            if not (
                magic == _CLIP_MAGIC
                and clip == last.clips + 1
                and frames > 0
                and total == last.frames + frames
                and moofs > 0
                and next_sequence == last.next_sequence + moofs
                and length == pos - clip_start
            ):
                break
            ends.append(_ClipEnd(pos + size, total, clip, next_sequence, clip_start, length, crc))
            clip_start, moofs = pos + size, 0
        else:
            break
        pos += size
    last = ends[-1]
    if last.clips and _crc_of(file, last.data_start, last.data_length) != last.crc:
        log.warning("clip %d of the partial video is damaged (CRC mismatch)", last.clips)
        ends.pop()
    return _Scan(settings, moov, ends, end)


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
            is in the way (it is never overwritten: continue it with :meth:`resume`, or
            move it away or delete it, e.g. with :meth:`discard_partial`).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float | Fraction = 16,
        crf: int = 18,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
    ) -> None:
        self._configure(path, fps, crf, codec, pix_fmt)
        self._file = _create_partial(self._path, self._partial)

    @classmethod
    def resume(
        cls,
        path: PathLike,
        *,
        expected_frames: int,
        fps: float | Fraction | None = None,
        crf: int | None = None,
        codec: str | None = None,
        pix_fmt: str | None = None,
    ) -> VideoWriter:
        """Continue the partial file an interrupted writer for ``path`` left behind.

        Everything after the last complete clip (a clip the crash cut off) is truncated
        away. The remaining clips must hold exactly ``expected_frames`` frames (what the
        caller recorded as finished); if the file holds more whole clips (a crash after a
        write but before the caller recorded it), it is cut back to ``expected_frames``,
        which must then fall at the end of a clip. ``expected_frames=0`` starts the file
        over. The returned writer appends to the same file as if it had never stopped.

        ``fps``, ``crf``, ``codec`` and ``pix_fmt`` default to the interrupted run's
        settings; given ones must match them.

        Raises:
            SviError: the partial file is missing, unreadable or not written by this
                class, holds a different number of frames than expected (or
                ``expected_frames`` is not at the end of a clip), the settings differ, or
                this FFmpeg encodes a stream header different from the file's. The file
                is not changed then.
        """
        if (
            isinstance(expected_frames, bool)
            or not isinstance(expected_frames, int)
            or expected_frames < 0
        ):
            raise SviError(f"expected_frames must be an integer >= 0, got {expected_frames!r}")
        target = Path(path)
        _check_target(target)
        partial = cls.partial_path_for(target)
        file = _open_partial(target, partial)
        try:
            given = {"fps": fps, "crf": crf, "codec": codec, "pix_fmt": pix_fmt}
            return cls._resume_from(file, target, partial, expected_frames, given)
        except BaseException:
            file.close()
            raise

    @classmethod
    def _resume_from(
        cls,
        file: io.FileIO,
        target: Path,
        partial: Path,
        expected_frames: int,
        given: dict[str, Any],
    ) -> VideoWriter:
        try:
            scan = _scan_partial(file)
        except _NotOurs as exc:
            raise SviError(
                f"{partial}: cannot resume: not a partial video written by svi ({exc}); "
                "delete it to start over"
            ) from exc
        except OSError as exc:
            raise SviError(f"{partial}: cannot read it to resume: {exc}") from exc
        stop = _pick_end(scan.ends, expected_frames, partial)
        settings = _resume_settings(scan.settings, given, partial)
        writer = cls.__new__(cls)
        writer._configure(
            target, settings["fps"], settings["crf"], settings["codec"], settings["pix_fmt"]
        )
        writer._file = file
        if stop.clips:
            assert scan.moov is not None
            writer._restore(stop, (settings["height"], settings["width"]), scan.moov)
        try:
            if scan.size > stop.offset:
                os.ftruncate(file.fileno(), stop.offset)
                os.fsync(file.fileno())
            file.seek(stop.offset)
        except OSError as exc:
            raise SviError(f"{partial}: cannot truncate it to resume: {exc}") from exc
        if scan.size > stop.offset:
            log.warning(
                "%s: dropped %d bytes after frame %d (clips the interrupted run did not "
                "finish or the caller did not record)",
                partial,
                scan.size - stop.offset,
                stop.frames,
            )
        log.info("resuming %s after %d frames (%d clips)", partial, stop.frames, stop.clips)
        return writer

    def _restore(self, stop: _ClipEnd, size: tuple[int, int], file_moov: bytes) -> None:
        """Take up the state after ``stop``; check this encoder matches the file's header."""
        height, width = size
        probe, _, _ = self._encode_clip(iter([np.zeros((height, width, 3), np.uint8)]))
        try:
            _, moov, _, _ = _split_fragmented_mp4(probe, 1, 0)
        except _Mp4LayoutError as exc:
            raise RuntimeError(f"{self._path}: unexpected MP4 layout from FFmpeg: {exc}") from exc
        if _moov_core(moov) != _moov_core(file_moov):
            raise SviError(
                f"{self._partial}: cannot resume: {self._codec} here encodes a different "
                "stream header than the interrupted run did (another FFmpeg/PyAV version?); "
                "start over"
            )
        self._moov = moov
        self._size = size
        self._frames = stop.frames
        self._clips = stop.clips
        self._fragments = stop.next_sequence - 1
        self._committed = stop.offset

    @staticmethod
    def discard_partial(path: PathLike) -> bool:
        """Delete the partial file an interrupted writer for ``path`` left behind.

        Returns whether there was one. Raises SviError if it cannot be deleted.
        """
        partial = VideoWriter.partial_path_for(path)
        if partial.is_dir() and not partial.is_symlink():
            raise SviError(f"{partial} is a directory, not a partial video; remove it yourself")
        try:
            partial.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SviError(f"cannot delete {partial}: {exc}") from exc
        log.info("deleted the partial video %s of an earlier run", partial)
        return True

    def _configure(
        self, path: PathLike, fps: float | Fraction, crf: int, codec: str, pix_fmt: str
    ) -> None:
        """Validate the settings and set up an empty writer state (no file yet)."""
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
        self._clips = 0
        self._committed = 0
        self._closed = False

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
    def bytes_committed(self) -> int:
        """Size in bytes of the partial file's complete part (the clips written so far).

        Callers may record it with :attr:`frames_written` after each write.
        """
        return self._committed

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
        head = [] if self._moov is not None else [init, self._settings_box(size)]
        record = _CLIP_RECORD.pack(
            _CLIP_MAGIC,
            self._clips + 1,
            count,
            self._frames + count,
            self._fragments + n_fragments + 1,
            len(fragments),
            zlib.crc32(fragments),
        )
        self._write_durably(*head, fragments, _free_box(record))
        self._moov = moov
        self._size = size
        self._frames += count
        self._fragments += n_fragments
        self._clips += 1
        self._committed = self._file.tell()
        log.debug("%s: +%d frames (total %d)", self._partial, count, self._frames)

    def _settings_box(self, size: tuple[int, int]) -> bytes:
        """The ``free`` box after the init segment: what :meth:`resume` needs to know."""
        settings = {
            "format": _HEAD_FORMAT,
            "fps": f"{self._fps.numerator}/{self._fps.denominator}",
            "crf": self._crf,
            "codec": self._codec,
            "pix_fmt": self._pix_fmt,
            "height": size[0],
            "width": size[1],
        }
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return _free_box(_HEAD_MAGIC + text.encode())

    def _write_durably(self, *chunks: bytes) -> None:
        """Append ``chunks`` and fsync; on failure cut the file back to its previous end."""
        good_end = self._file.tell()
        try:
            for chunk in chunks:
                view = memoryview(chunk)
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


def _check_target(target: Path) -> None:
    """Check the output location: suffix, existing writable directory, not a directory."""
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


def _create_partial(target: Path, partial: Path) -> io.FileIO:
    """Check the output location and create the (new, empty) partial file."""
    _check_target(target)
    try:
        return io.FileIO(partial, "xb")  # unbuffered: write() goes straight to the OS
    except FileExistsError as exc:
        raise SviError(
            f"{target}: {partial} exists (left by an interrupted run?); resume it, or move "
            "or delete it first"
        ) from exc
    except OSError as exc:
        raise SviError(f"{target}: cannot create {partial}: {exc}") from exc


def _open_partial(target: Path, partial: Path) -> io.FileIO:
    """Open the partial file of an interrupted run for reading and appending."""
    if not partial.exists():
        done = f" ({target} exists: that run finished)" if target.is_file() else ""
        raise SviError(f"{target}: nothing to resume: {partial} not found{done}")
    if not partial.is_file():
        raise SviError(f"{target}: cannot resume: {partial} is not a regular file")
    try:
        return io.FileIO(partial, "r+")  # unbuffered, like a new partial file
    except OSError as exc:
        raise SviError(f"{target}: cannot open {partial} to resume: {exc}") from exc


def _pick_end(ends: list[_ClipEnd], expected_frames: int, partial: Path) -> _ClipEnd:
    """The clip end holding exactly ``expected_frames`` frames; else SviError."""
    for end in ends:
        if end.frames == expected_frames:
            return end
    have = ends[-1]
    if expected_frames > have.frames:
        raise SviError(
            f"{partial}: cannot resume: its complete clips hold {have.frames} frames "
            f"({have.clips} clips) but {expected_frames} were recorded as written; it lost "
            "data or belongs to another run, so start over"
        )
    below = max(end.frames for end in ends if end.frames < expected_frames)
    above = min(end.frames for end in ends if end.frames > expected_frames)
    raise SviError(
        f"{partial}: cannot resume after frame {expected_frames}: no clip ends there (the "
        f"nearest clip ends are after frames {below} and {above})"
    )


_RESUME_DEFAULTS: dict[str, Any] = {"fps": 16, "crf": 18, "codec": "libx264", "pix_fmt": "yuv420p"}


def _resume_settings(
    stored: dict[str, Any] | None, given: dict[str, Any], partial: Path
) -> dict[str, Any]:
    """Writer settings for a resumed run: the file's, which given ones must equal.

    Without stored settings (the file was cut off before them) the given ones or the
    defaults.
    """
    if stored is None:
        return {
            key: _RESUME_DEFAULTS[key] if value is None else value for key, value in given.items()
        }
    try:
        settings = {
            "fps": _as_fps(Fraction(stored["fps"])),
            "crf": _check_crf(stored["crf"]),
            "codec": str(stored["codec"]),
            "pix_fmt": str(stored["pix_fmt"]),
            "height": int(stored["height"]),
            "width": int(stored["width"]),
        }
    except (KeyError, TypeError, ValueError, ZeroDivisionError, SviError) as exc:
        raise SviError(f"{partial}: cannot resume: its settings box is damaged ({exc})") from exc
    for key, value in given.items():
        if value is None:
            continue
        same = _as_fps(value) == settings[key] if key == "fps" else value == settings[key]
        if not same:
            raise SviError(
                f"{partial}: cannot resume with {key}={value!r}: the interrupted run used "
                f"{key}={settings[key]!s}; resume with its settings or start over"
            )
    return settings


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
