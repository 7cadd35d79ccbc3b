"""Fragmented-MP4 box surgery: re-stamping clips, the svi boxes, scanning partial files.

The files :class:`~svi.video.writer.VideoWriter` writes are fragmented MP4s (ISO BMFF:
``ftyp`` + an empty ``moov`` + one ``moof``/``mdat`` pair per fragment). Each clip is
muxed on its own into memory; :func:`split_fragmented_mp4` cuts that output into init
segment, ``moov`` and fragments, and re-stamps the fragments' sequence numbers and
decode times (``tfdt``) to continue the previous clips. Data offsets are relative to
each ``moof`` (``default_base_moof``), so fragments can be moved.

svi's own boxes are top-level ``free`` boxes, ignored by players:

- after the init segment, the *settings box* (:func:`settings_box`): ``svi-head`` + the
  writer settings and frame size as JSON;
- after each clip's fragments, the *clip record* (:func:`clip_record_box`): clip number,
  frame counts, next fragment sequence number, the clip's byte length and CRC-32.

:func:`scan_partial` walks the top-level boxes of a partial file and returns every
point at which it ends right after a complete, checked clip (what resuming needs).
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_HEAD_MAGIC = b"svi-head"
_CLIP_MAGIC = b"svi-clip"
_HEAD_FORMAT = 1
# magic, clip number (1-based), frames in the clip, frames up to and including it,
# sequence number of the next fragment, byte length of the clip's fragments, their CRC-32
_CLIP_RECORD = struct.Struct(">8sIIQIQI")
_READ_CHUNK = 1 << 20


class Mp4LayoutError(RuntimeError):
    """The muxer produced MP4 boxes this module cannot re-stamp (a bug, not user error)."""


def iter_boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, offset, size)`` of the ISO BMFF boxes laid out in ``data[start:end]``."""
    pos = start
    while pos < end:
        if end - pos < 8:
            raise Mp4LayoutError(f"truncated box header at offset {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise Mp4LayoutError(f"bad size {size} for box {kind!r} at offset {pos}")
        yield kind, pos, size
        pos += size


def _restamp_traf(data: bytearray, start: int, end: int, tick_offset: int) -> None:
    """Shift the decode time (``tfdt``) of one track fragment by ``tick_offset`` ticks."""
    for kind, pos, _size in iter_boxes(data, start, end):
        if kind == b"tfhd":
            (flags,) = struct.unpack_from(">I", data, pos + 8)
            if flags & 0x1:  # base-data-offset-present: absolute file offsets
                raise Mp4LayoutError("fragment uses absolute data offsets")
        elif kind == b"tfdt":
            if data[pos + 8] == 1:
                (old,) = struct.unpack_from(">Q", data, pos + 12)
                struct.pack_into(">Q", data, pos + 12, old + tick_offset)
            else:
                (old,) = struct.unpack_from(">I", data, pos + 12)
                if old + tick_offset >= 2**32:
                    raise Mp4LayoutError("32-bit tfdt overflow")
                struct.pack_into(">I", data, pos + 12, old + tick_offset)


def _restamp_moof(data: bytearray, start: int, size: int, sequence: int, tick_offset: int) -> None:
    """Give one ``moof`` box a new sequence number and shift its decode times."""
    for kind, pos, child_size in iter_boxes(data, start + 8, start + size):
        if kind == b"mfhd":
            struct.pack_into(">I", data, pos + 12, sequence)
        elif kind == b"traf":
            _restamp_traf(data, pos + 8, pos + child_size, tick_offset)


def split_fragmented_mp4(
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
    for kind, pos, size in iter_boxes(data, 0, len(data)):
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
        raise Mp4LayoutError("muxer output has no moov or no fragments")
    return bytes(init), moov, bytes(fragments), count


def free_box(payload: bytes) -> bytes:
    """A top-level ``free`` box (skipped by every MP4 reader) carrying ``payload``."""
    return struct.pack(">I4s", 8 + len(payload), b"free") + payload


def moov_core(moov: bytes) -> bytes:
    """A ``moov`` box without its ``udta`` (which only names the muxer and its version)."""
    return b"".join(
        moov[pos : pos + size]
        for kind, pos, size in iter_boxes(moov, 8, len(moov))
        if kind != b"udta"
    )


def settings_box(settings: dict[str, Any]) -> bytes:
    """The ``free`` box after the init segment: the writer ``settings`` (JSON) + format."""
    payload = {"format": _HEAD_FORMAT, **settings}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return free_box(_HEAD_MAGIC + text.encode())


def clip_record_box(clip: int, frames: int, total: int, next_sequence: int, data: bytes) -> bytes:
    """The ``free`` box closing clip number ``clip`` whose fragments are ``data``.

    ``frames`` in the clip, ``total`` frames up to and including it, ``next_sequence`` the
    sequence number of the next fragment.
    """
    record = _CLIP_RECORD.pack(
        _CLIP_MAGIC, clip, frames, total, next_sequence, len(data), zlib.crc32(data)
    )
    return free_box(record)


@dataclass(frozen=True)
class ClipEnd:
    """Where the file may end: after ``clips`` complete clips holding ``frames`` frames."""

    offset: int
    frames: int
    clips: int
    next_sequence: int
    data_start: int = 0
    data_length: int = 0
    crc: int = 0


_EMPTY = ClipEnd(offset=0, frames=0, clips=0, next_sequence=1)


@dataclass
class Scan:
    """What :func:`scan_partial` found: settings, stream header and the clip ends."""

    settings: dict[str, Any] | None
    moov: bytes | None
    ends: list[ClipEnd]
    size: int


class NotOurs(Exception):
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
    write): then nothing in it is usable. Raises NotOurs for any other layout (a box cut
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
                raise NotOurs(f"found a {head[4:8]!r} box where a {expected!r} box was expected")
            if expected == b"free" and not _HEAD_MAGIC.startswith(payload):
                raise NotOurs("it has no svi settings box")
            return None, None, 0
        kind, size = box
        if kind != expected or size == 0:
            raise NotOurs(f"found a {kind!r} box where a {expected!r} box was expected")
        if kind == b"moov":
            moov = _read_at(file, pos, size)
            try:
                moov_core(moov)
            except Mp4LayoutError as exc:
                raise NotOurs(f"its moov box is malformed ({exc})") from exc
        elif kind == b"free":
            payload = _read_at(file, pos + 8, size - 8)
            if not payload.startswith(_HEAD_MAGIC):
                raise NotOurs("it has no svi settings box")
            try:
                settings = json.loads(payload[len(_HEAD_MAGIC) :])
            except ValueError as exc:
                raise NotOurs(f"its settings box is unreadable ({exc})") from exc
            if not isinstance(settings, dict) or settings.get("format") != _HEAD_FORMAT:
                raise NotOurs("its settings box has an unknown format")
        pos += size
    return settings, moov, pos


def scan_partial(file: io.FileIO) -> Scan:
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
        return Scan(None, None, ends, 0)
    settings, moov, pos = _scan_header(file, end)
    if settings is None:
        return Scan(None, None, ends, end)
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
            ends.append(ClipEnd(pos + size, total, clip, next_sequence, clip_start, length, crc))
            clip_start, moofs = pos + size, 0
        else:
            break
        pos += size
    last = ends[-1]
    if last.clips and _crc_of(file, last.data_start, last.data_length) != last.crc:
        log.warning("clip %d of the partial video is damaged (CRC mismatch)", last.clips)
        ends.pop()
    return Scan(settings, moov, ends, end)
