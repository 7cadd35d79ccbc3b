"""The streaming, crash-safe MP4 writer: :class:`VideoWriter` and :func:`write_video`.

:class:`VideoWriter` streams a very long video to an MP4 file clip by clip. It is built
for crash safety: **after every** :meth:`VideoWriter.write` **returns, the bytes on disk
form a valid, playable MP4 holding exactly the frames written so far** (they are also
``fsync``-ed, so this holds after a power cut too, as far as the filesystem honours
``fsync``). A crash or ``kill -9`` after clip *k* never loses clips 1..k. If the process
dies *during* a write, clips 1..k-1 are intact and the file may end in a partial fragment
of clip k, which the readers skip (a few players may complain about it).

How: each clip is encoded by a fresh encoder and muxer into an in-memory fragmented MP4
(so every clip starts with a key frame and nothing stays buffered inside FFmpeg between
writes), then its fragments are re-stamped and appended to the file
(:mod:`svi.video.mp4`). B-frames are disabled so decode and presentation times coincide.
The finished file stays a fragmented MP4 (standard ISO BMFF, as used for web streaming;
checked here only with FFmpeg/PyAV). Its ``moov`` lists no samples, so tools that only
read the ``moov`` report 0 frames, which is why :func:`~svi.video.reader.video_info`
counts by decoding.

While writing, data goes to a sibling ``<stem>.partial<suffix>`` file
(:meth:`VideoWriter.partial_path_for`); :meth:`VideoWriter.close` renames it atomically
(``os.replace``) onto the target. If the ``with`` block exits with an exception, the
partial file is kept (it is a valid video of the finished clips) and the target is not
created.

Resuming: each clip's fragments are followed by a clip record and the first clip is
preceded by the writer settings and frame size (both in ``free`` boxes, see
:mod:`svi.video.mp4`). :meth:`VideoWriter.resume` reopens the partial file of an
interrupted run, keeps everything up to the last clip record that checks out (a clip
without its record was cut off by the crash and is dropped), optionally cuts back to the
frame count the caller recorded, and continues appending.
:meth:`VideoWriter.discard_partial` deletes a leftover partial file instead.

Frame sizes: the first frame fixes the size; later frames of another size raise
:class:`~svi.errors.SviError`. Chroma-subsampled pixel formats (``yuv420p``, the
default, and ``yuv422p``) need even sizes: odd sizes raise ``SviError`` rather than being
silently padded or cropped (use ``pix_fmt="yuv444p"`` for odd sizes).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

from svi.errors import SviError
from svi.video.mp4 import (
    ClipEnd,
    Mp4LayoutError,
    NotOurs,
    clip_record_box,
    moov_core,
    scan_partial,
    settings_box,
    split_fragmented_mp4,
)
from svi.video.reader import PathLike

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})
"""Suffixes :class:`VideoWriter` accepts for its target (the container is always MP4)."""

_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"
_MIN_TIMESCALE = 10_000
_SUBSAMPLED_FORMATS = ("yuv420", "yuv422", "nv12", "nv21", "yuvj420", "yuvj422")


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
            scan = scan_partial(file)
        except NotOurs as exc:
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
            # whole writes past the recorded frames (a tail held back, a clip written but
            # not recorded) are the ordinary cut of a resume; a write cut short is damage
            last, whole = scan.ends[-1], scan.size == scan.ends[-1].offset
            log.log(
                logging.INFO if whole else logging.WARNING,
                "%s: dropped %d bytes after frame %d: %d complete frames the caller did not "
                "record%s",
                partial,
                scan.size - stop.offset,
                stop.frames,
                last.frames - stop.frames,
                "" if whole else " and a write the interruption cut short",
            )
        log.info("resuming %s after %d frames (%d clips)", partial, stop.frames, stop.clips)
        return writer

    def _restore(self, stop: ClipEnd, size: tuple[int, int], file_moov: bytes) -> None:
        """Take up the state after ``stop``; check this encoder matches the file's header."""
        height, width = size
        probe, _, _ = self._encode_clip(iter([np.zeros((height, width, 3), np.uint8)]))
        try:
            _, moov, _, _ = split_fragmented_mp4(probe, 1, 0)
        except Mp4LayoutError as exc:
            raise RuntimeError(f"{self._path}: unexpected MP4 layout from FFmpeg: {exc}") from exc
        if moov_core(moov) != moov_core(file_moov):
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

    def discard(self) -> None:
        """Stop without finalising and delete the partial file, whatever it holds."""
        if not self._closed:
            self._closed = True
            self._file.close()
        self._partial.unlink(missing_ok=True)

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
        except av.FFmpegError as exc:
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
            init, moov, fragments, n_fragments = split_fragmented_mp4(
                data, self._fragments + 1, self._frames * ticks_per_frame
            )
        except Mp4LayoutError as exc:
            raise RuntimeError(f"{self._path}: unexpected MP4 layout from FFmpeg: {exc}") from exc
        if self._moov is not None and moov != self._moov:
            raise RuntimeError(f"{self._path}: encoder settings changed between clips")
        head = [] if self._moov is not None else [init, self._settings_box(size)]
        record = clip_record_box(
            self._clips + 1,
            count,
            self._frames + count,
            self._fragments + n_fragments + 1,
            fragments,
        )
        self._write_durably(*head, fragments, record)
        self._moov = moov
        self._size = size
        self._frames += count
        self._fragments += n_fragments
        self._clips += 1
        self._committed = self._file.tell()
        log.debug("%s: +%d frames (total %d)", self._partial, count, self._frames)

    def _settings_box(self, size: tuple[int, int]) -> bytes:
        """The ``free`` box after the init segment: what :meth:`resume` needs to know."""
        return settings_box(
            {
                "fps": f"{self._fps.numerator}/{self._fps.denominator}",
                "crf": self._crf,
                "codec": self._codec,
                "pix_fmt": self._pix_fmt,
                "height": size[0],
                "width": size[1],
            }
        )

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
    except (ValueError, av.FFmpegError) as exc:
        raise SviError(f"unknown video encoder {codec!r}: {exc}") from exc
    if found.type != "video":
        raise SviError(f"{codec!r} is not a video encoder")
    return codec


def _check_pix_fmt(pix_fmt: str) -> str:
    try:
        av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError) as exc:
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


def _pick_end(ends: list[ClipEnd], expected_frames: int, partial: Path) -> ClipEnd:
    """The clip end holding exactly ``expected_frames`` frames; else SviError."""
    for end in ends:
        if end.frames == expected_frames:
            return end
    have = ends[-1]
    if expected_frames > have.frames:
        raise SviError(
            # frames only: a clip here is one write() (a caller's tail is one too)
            f"{partial}: cannot resume: its complete clips hold {have.frames} frames but "
            f"{expected_frames} were recorded as written; it lost "
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
