"""Tests for svi.video: the crash-safe VideoWriter and the video/image readers."""

from __future__ import annotations

import io
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from svi.errors import SviError
from svi.video import (
    VideoWriter,
    iter_frames,
    mp4,
    read_image,
    read_video,
    video_info,
    write_video,
)

CLIP_FRAMES = 5


def smooth_clip(k: int, frames: int = CLIP_FRAMES, height: int = 32, width: int = 32) -> np.ndarray:
    """Deterministic smooth RGB content, different for every clip index ``k``."""
    y, x = np.mgrid[0:height, 0:width]
    out = [
        np.stack([(x * 4 + i * 3 + k * 20) % 256, (y * 4 + k * 7) % 256, (x + y) * 2 + i], -1)
        for i in range(frames)
    ]
    return np.stack(out).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def reference(clips: int) -> np.ndarray:
    return np.concatenate([smooth_clip(k) for k in range(clips)])


# --------------------------------------------------------------------------- writer


def test_round_trip_count_size_and_quality(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with VideoWriter(target, fps=16) as writer:
        for k in range(3):
            writer.write(smooth_clip(k))
        assert writer.frames_written == 15
    video = read_video(target)
    assert video.shape == (15, 32, 32, 3)
    assert video.dtype == np.uint8
    assert psnr(video, reference(3)) > 35.0
    info = video_info(target)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (15, 16.0, 32, 32)
    assert info["duration"] == pytest.approx(15 / 16)
    assert info["codec"] == "h264"


def test_iter_frames_streams_one_frame_at_a_time(tmp_path: Path) -> None:
    target = write_video(tmp_path / "out.mp4", smooth_clip(0))
    frames = iter_frames(target)
    first = next(frames)
    assert first.shape == (32, 32, 3)
    assert len(list(frames)) == CLIP_FRAMES - 1


def test_crf0_yuv444_is_near_lossless(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(4, 31, 33, 3), dtype=np.uint8)  # odd sizes are fine
    with VideoWriter(tmp_path / "lossless.mp4", crf=0, pix_fmt="yuv444p") as writer:
        writer.write(noise)
    back = read_video(tmp_path / "lossless.mp4")
    diff = np.abs(back.astype(np.int16) - noise.astype(np.int16))
    assert back.shape == (4, 31, 33, 3)
    assert diff.max() <= 2  # only RGB <-> YUV rounding remains
    assert diff.mean() < 0.5


def test_single_frame_and_iterable_clips(tmp_path: Path) -> None:
    clip = smooth_clip(1)
    with VideoWriter(tmp_path / "out.mp4") as writer:
        writer.write(clip[0])  # one (H, W, 3) frame
        writer.write(iter(list(clip[1:])))  # a lazy iterable of frames
        assert writer.frames_written == CLIP_FRAMES
    assert psnr(read_video(tmp_path / "out.mp4"), clip) > 35.0


def test_write_video_from_generator(tmp_path: Path) -> None:
    frames = (frame for frame in reference(2))
    target = write_video(tmp_path / "gen.mp4", frames, fps=8)
    assert target == tmp_path / "gen.mp4"
    info = video_info(target)
    assert (info["frames"], info["fps"]) == (10, 8.0)


def test_partial_file_is_valid_after_every_write(tmp_path: Path) -> None:
    target = tmp_path / "long.mp4"
    writer = VideoWriter(target)
    for k in range(3):
        writer.write(smooth_clip(k))
        # Read from disk through another handle, without closing the writer.
        on_disk = read_video(VideoWriter.partial_path_for(target))
        assert on_disk.shape == ((k + 1) * CLIP_FRAMES, 32, 32, 3)
        assert psnr(on_disk, reference(k + 1)) > 35.0
        assert video_info(writer.partial_path)["frames"] == (k + 1) * CLIP_FRAMES
    writer.close()
    assert read_video(target).shape == (15, 32, 32, 3)


def test_sigkill_after_k_clips_keeps_exactly_k_clips(tmp_path: Path) -> None:
    target = tmp_path / "crash.mp4"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_video import smooth_clip
        from svi.video import VideoWriter
        with VideoWriter({str(target)!r}) as writer:
            for k in range(2):
                writer.write(smooth_clip(k))
            print("wrote", writer.frames_written, flush=True)
            sys.stdin.read()  # block until killed
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == f"wrote {2 * CLIP_FRAMES}"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()
    recovered = read_video(VideoWriter.partial_path_for(target))
    assert recovered.shape == (2 * CLIP_FRAMES, 32, 32, 3)
    assert psnr(recovered, reference(2)) > 35.0


def test_atomic_finalisation(tmp_path: Path) -> None:
    target = tmp_path / "final.mp4"
    partial = tmp_path / "final.partial.mp4"
    assert VideoWriter.partial_path_for(target) == partial
    writer = VideoWriter(target)
    assert writer.path == target
    writer.write(smooth_clip(0))
    assert not target.exists()
    assert partial.exists()
    writer.close()
    assert target.exists()
    assert not partial.exists()
    assert writer.closed
    writer.close()  # idempotent


def test_exception_in_with_keeps_partial(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "boom.mp4"
    partial = VideoWriter.partial_path_for(target)
    caplog.set_level(logging.WARNING, logger="svi.video")
    with pytest.raises(RuntimeError, match="generation failed"), VideoWriter(target) as writer:
        writer.write(smooth_clip(0))
        raise RuntimeError("generation failed")
    assert not target.exists()
    assert read_video(partial).shape == (CLIP_FRAMES, 32, 32, 3)
    assert str(partial) in caplog.text


def test_exception_before_any_frame_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "nothing.mp4"
    with pytest.raises(KeyError), VideoWriter(target):
        raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_close_without_frames_is_an_error(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "empty.mp4")
    with pytest.raises(SviError, match="no frames were written"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_between_clips(tmp_path: Path) -> None:
    target = tmp_path / "size.mp4"
    writer = VideoWriter(target)
    writer.write(smooth_clip(0))
    with pytest.raises(SviError, match=r"frame size 48x32 differs from the first frame's 32x32"):
        writer.write(smooth_clip(1, width=48))
    # The failed clip left no trace: the partial file still holds exactly clip 0.
    assert writer.frames_written == CLIP_FRAMES
    assert read_video(writer.partial_path).shape == (CLIP_FRAMES, 32, 32, 3)
    writer.close()


def test_size_mismatch_inside_a_clip(tmp_path: Path) -> None:
    frames = [smooth_clip(0)[0], smooth_clip(0, height=16)[0]]
    with pytest.raises(SviError, match="32x16 differs"):
        write_video(tmp_path / "bad.mp4", frames)
    assert not (tmp_path / "bad.mp4").exists()


def test_odd_size_needs_yuv444(tmp_path: Path) -> None:
    with pytest.raises(SviError, match=r"33x31 is odd, but pix_fmt yuv420p needs even"):
        write_video(tmp_path / "odd.mp4", smooth_clip(0, height=31, width=33))


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "must be uint8 RGB, got dtype float32"),
        (np.zeros((2, 8, 8, 4), dtype=np.uint8), r"must have shape \(H, W, 3\)"),
        (np.zeros((8, 8), dtype=np.uint8), r"shape \(T, H, W, 3\) or \(H, W, 3\)"),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), "empty clip"),
    ],
)
def test_bad_frames(tmp_path: Path, frames: np.ndarray, message: str) -> None:
    with VideoWriter(tmp_path / "x.mp4") as writer:
        with pytest.raises(SviError, match=message):
            writer.write(frames)
        writer.write(smooth_clip(0))


def test_write_after_close(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "x.mp4")
    writer.write(smooth_clip(0))
    writer.close()
    with pytest.raises(SviError, match="after the writer was closed"):
        writer.write(smooth_clip(1))


def test_missing_output_directory(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "out.mp4"
    with pytest.raises(SviError, match=r"output directory .*such does not exist"):
        VideoWriter(target)
    assert not (tmp_path / "no").exists()


def test_output_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SviError, match="is not a directory"):
        VideoWriter(tmp_path / "file" / "out.mp4")


def test_unwritable_output_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated (tests may run as root, for whom every directory is writable).
    monkeypatch.setattr("svi.video.writer.os.access", lambda *args, **kwargs: False)
    with pytest.raises(SviError, match="is not writable"):
        VideoWriter(tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_output_path_is_a_directory_or_wrong_suffix(tmp_path: Path) -> None:
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(SviError, match="output path is a directory"):
        VideoWriter(tmp_path / "dir.mp4")
    with pytest.raises(SviError, match="output must end in one of"):
        VideoWriter(tmp_path / "out.webm")


def test_stale_partial_is_never_overwritten(tmp_path: Path) -> None:
    partial = tmp_path / "out.partial.mp4"
    partial.write_bytes(b"precious")
    with pytest.raises(SviError, match="move or delete it first"):
        VideoWriter(tmp_path / "out.mp4")
    assert partial.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 0}, "fps must be positive"),
        ({"crf": -1}, "crf must be an integer"),
        ({"codec": "no-such-codec"}, "unknown video encoder"),
        ({"codec": "aac"}, "not a video encoder"),
        ({"pix_fmt": "no-such-format"}, "unknown pixel format"),
    ],
)
def test_bad_writer_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SviError, match=message):
        VideoWriter(tmp_path / "out.mp4", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- resume


# x264 output is not bit-reproducible here: the same frames and settings sometimes encode
# differently (even single-threaded; it changes with heap state, e.g. after decoding
# something). Lossless encoding makes the decoded pixels reproducible regardless, so the
# resume tests use it to compare against an uninterrupted run frame by frame.
LOSSLESS: dict[str, Any] = {"crf": 0, "pix_fmt": "yuv444p"}


def frame_times(path: Path) -> list[int]:
    """Presentation timestamps of every frame, as stored in the file."""
    with av.open(str(path)) as container:
        return [frame.pts for frame in container.decode(video=0)]


def fragment_sequence_numbers(path: Path) -> list[int]:
    """``mfhd`` sequence number of every top-level ``moof`` box (ISO BMFF)."""
    data = path.read_bytes()
    numbers, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"moof":  # moof header, then mfhd: header, version/flags, number
            assert data[pos + 12 : pos + 16] == b"mfhd"
            numbers.append(struct.unpack_from(">I", data, pos + 20)[0])
        pos += size
    return numbers


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips 0..4 written losslessly in one go: what a resumed run must match."""
    target = tmp_path_factory.mktemp("uninterrupted") / "ref.mp4"
    with VideoWriter(target, **LOSSLESS) as writer:
        for k in range(5):
            writer.write(smooth_clip(k))
    return target


def crashed_run(target: Path, clips: int) -> list[int]:
    """Write clips 0..clips-1 and stop without finalising; return bytes_committed per clip.

    ``abort`` only closes the file descriptor, so the partial file is left exactly as a
    crash right after the last write would leave it.
    """
    writer = VideoWriter(target, **LOSSLESS)
    committed = []
    for k in range(clips):
        writer.write(smooth_clip(k))
        committed.append(writer.bytes_committed)
    writer.abort()
    return committed


def finish(writer: VideoWriter, total_clips: int = 5) -> None:
    """Write the clips after those the (resumed) writer holds, then close it."""
    for k in range(writer.frames_written // CLIP_FRAMES, total_clips):
        writer.write(smooth_clip(k))
    writer.close()


def assert_same_as_uninterrupted(target: Path, uninterrupted: Path) -> None:
    video = read_video(target)
    assert video.shape == (5 * CLIP_FRAMES, 32, 32, 3)
    assert np.array_equal(video, read_video(uninterrupted))  # decoded pixels, frame by frame
    assert frame_times(target) == frame_times(uninterrupted)
    numbers = fragment_sequence_numbers(target)
    assert numbers == list(range(1, len(numbers) + 1))
    assert numbers == fragment_sequence_numbers(uninterrupted)


def test_mp4_scan_finds_the_settings_and_every_clip_end(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    committed = crashed_run(target, 3)
    with io.FileIO(VideoWriter.partial_path_for(target), "r") as file:
        scan = mp4.scan_partial(file)
    assert scan.settings == {"format": 1, "fps": "16/1", "crf": 0, "codec": "libx264",
                             "pix_fmt": "yuv444p", "height": 32, "width": 32}  # fmt: skip
    assert [end.offset for end in scan.ends] == [0, *committed]
    assert [end.frames for end in scan.ends] == [k * CLIP_FRAMES for k in range(4)]
    assert [end.clips for end in scan.ends] == [0, 1, 2, 3]
    assert scan.moov is not None and scan.size == committed[-1]
    record = mp4.clip_record_box(1, 5, 5, 2, b"fragments")
    assert record[4:8] == b"free" and len(record) == struct.unpack_from(">I", record)[0]


def test_bytes_committed_is_the_size_of_the_complete_part(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    writer = VideoWriter(target)
    assert writer.bytes_committed == 0
    for k in range(2):
        writer.write(smooth_clip(k))
        assert writer.bytes_committed == writer.partial_path.stat().st_size
    writer.close()
    assert writer.bytes_committed == target.stat().st_size


def test_resume_after_crash_matches_an_uninterrupted_run(
    tmp_path: Path, uninterrupted: Path
) -> None:
    target = tmp_path / "long.mp4"
    committed = crashed_run(target, 3)
    writer = VideoWriter.resume(target, expected_frames=3 * CLIP_FRAMES)
    assert (writer.frames_written, writer.bytes_committed) == (15, committed[-1])
    assert writer.path == target
    assert not writer.closed
    finish(writer)
    assert not writer.partial_path.exists()
    assert_same_as_uninterrupted(target, uninterrupted)


@pytest.mark.parametrize("damage", ["mid-clip", "record-cut", "garbage", "box-header-cut"])
def test_resume_drops_a_half_written_clip(
    tmp_path: Path,
    uninterrupted: Path,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = tmp_path / "torn.mp4"
    committed = crashed_run(target, 4)
    partial = VideoWriter.partial_path_for(target)
    with partial.open("r+b") as file:
        if damage == "mid-clip":  # killed while writing clip 4
            file.truncate((committed[2] + committed[3]) // 2)
        elif damage == "record-cut":  # clip 4's frames are all there, its record is not
            file.truncate(committed[3] - 1)
        else:
            file.truncate(committed[2])
            file.seek(committed[2])
            if damage == "garbage":
                file.write(np.random.default_rng(2).bytes(1000))
            else:  # a fragment header promising more bytes than follow
                file.write(b"\x00\x00\x10\x00moof" + bytes(100))
    caplog.set_level(logging.WARNING, logger="svi.video")
    writer = VideoWriter.resume(target, expected_frames=3 * CLIP_FRAMES)
    assert "dropped" in caplog.text
    assert partial.stat().st_size == committed[2] == writer.bytes_committed
    assert read_video(partial).shape == (3 * CLIP_FRAMES, 32, 32, 3)
    finish(writer)
    assert_same_as_uninterrupted(target, uninterrupted)


def test_resume_cuts_back_to_the_recorded_frames(tmp_path: Path, uninterrupted: Path) -> None:
    """Crash after a write but before the caller recorded it: that clip is dropped."""
    target = tmp_path / "ahead.mp4"
    committed = crashed_run(target, 3)
    writer = VideoWriter.resume(target, expected_frames=2 * CLIP_FRAMES)
    assert writer.frames_written == 10
    assert writer.partial_path.stat().st_size == committed[1] == writer.bytes_committed
    finish(writer)
    assert_same_as_uninterrupted(target, uninterrupted)


def test_resume_from_zero_starts_over(tmp_path: Path, uninterrupted: Path) -> None:
    """Killed before or during the first write: only ``expected_frames=0`` fits."""
    target = tmp_path / "early.mp4"
    partial = VideoWriter.partial_path_for(target)
    committed = crashed_run(target, 1)
    with partial.open("r+b") as file:
        file.truncate(committed[0] // 2)
    with pytest.raises(SviError, match=r"hold 0 frames but 5 were recorded"):
        VideoWriter.resume(target, expected_frames=CLIP_FRAMES)
    writer = VideoWriter.resume(target, expected_frames=0, **LOSSLESS)  # settings were lost
    assert (writer.frames_written, writer.bytes_committed) == (0, 0)
    assert partial.stat().st_size == 0
    finish(writer)
    assert_same_as_uninterrupted(target, uninterrupted)
    partial.write_bytes(b"")  # killed before the first write
    writer = VideoWriter.resume(target, expected_frames=0)
    writer.abort()
    assert not partial.exists()


def test_resume_refuses_frame_counts_that_do_not_fit(tmp_path: Path) -> None:
    target = tmp_path / "mismatch.mp4"
    crashed_run(target, 3)
    partial = VideoWriter.partial_path_for(target)
    before = partial.read_bytes()
    with pytest.raises(SviError, match=r"after frame 7: no clip ends there .* 5 and 10\)"):
        VideoWriter.resume(target, expected_frames=7)
    with pytest.raises(SviError, match=r"hold 15 frames but 20 were recorded"):
        VideoWriter.resume(target, expected_frames=20)
    with pytest.raises(SviError, match="expected_frames must be an integer >= 0"):
        VideoWriter.resume(target, expected_frames=-1)
    assert partial.read_bytes() == before  # errors never change the file


def test_resume_drops_a_clip_whose_data_is_damaged(tmp_path: Path) -> None:
    """A power cut can persist a clip's record but not all its data: the CRC catches it."""
    target = tmp_path / "crc.mp4"
    committed = crashed_run(target, 3)
    partial = VideoWriter.partial_path_for(target)
    with partial.open("r+b") as file:
        file.seek(committed[2] - 200)  # inside clip 3's frame data
        file.write(b"\xff" * 8)
    with pytest.raises(SviError, match=r"hold 10 frames but 15 were recorded"):
        VideoWriter.resume(target, expected_frames=15)
    writer = VideoWriter.resume(target, expected_frames=10)
    finish(writer, 3)
    video = read_video(target)
    assert video.shape == (15, 32, 32, 3)
    assert psnr(video, reference(3)) > 35.0


def test_resume_needs_a_partial_file_of_this_writer(tmp_path: Path) -> None:
    target = tmp_path / "x.mp4"
    partial = VideoWriter.partial_path_for(target)
    with pytest.raises(SviError, match=r"nothing to resume: .*x\.partial\.mp4 not found$"):
        VideoWriter.resume(target, expected_frames=0)
    write_video(target, smooth_clip(0))
    with pytest.raises(SviError, match=r"not found \(.*x\.mp4 exists: that run finished\)"):
        VideoWriter.resume(target, expected_frames=5)
    not_ours = "not a partial video written by svi"
    target.rename(partial)  # a finished file has the same layout: resumable
    VideoWriter.resume(target, expected_frames=5).abort()
    partial.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(SviError, match=not_ours):
        VideoWriter.resume(target, expected_frames=0)
    encode_with_pyav(partial, reference(1), "libx264", "yuv420p")  # plain MP4
    with pytest.raises(SviError, match=not_ours):
        VideoWriter.resume(target, expected_frames=0)
    partial.unlink()
    partial.mkdir()
    with pytest.raises(SviError, match="is not a regular file"):
        VideoWriter.resume(target, expected_frames=0)
    with pytest.raises(SviError, match="output must end in one of"):
        VideoWriter.resume(tmp_path / "x.webm", expected_frames=0)


def test_resume_takes_the_settings_of_the_interrupted_run(tmp_path: Path) -> None:
    target = tmp_path / "slow.mp4"
    writer = VideoWriter(target, fps=8, crf=23, pix_fmt="yuv444p")
    writer.write(smooth_clip(0))
    writer.abort()
    for wrong, message in [
        ({"fps": 16}, "fps=16: the interrupted run used fps=8"),
        ({"crf": 18}, "crf=18: the interrupted run used crf=23"),
        ({"pix_fmt": "yuv420p"}, "pix_fmt='yuv420p': the interrupted run used pix_fmt=yuv444p"),
    ]:
        with pytest.raises(SviError, match=message):
            VideoWriter.resume(target, expected_frames=5, **wrong)  # type: ignore[arg-type]
    writer = VideoWriter.resume(target, expected_frames=5, fps=8.0, codec="libx264")
    finish(writer, 2)
    info = video_info(target)
    assert (info["frames"], info["fps"]) == (10, 8.0)
    assert psnr(read_video(target), reference(2)) > 35.0


def test_discard_partial(tmp_path: Path) -> None:
    target = tmp_path / "again.mp4"
    crashed_run(target, 1)
    with pytest.raises(SviError, match="move or delete it first"):
        VideoWriter(target)
    assert VideoWriter.discard_partial(target) is True
    assert not VideoWriter.partial_path_for(target).exists()
    assert VideoWriter.discard_partial(target) is False
    write_video(target, smooth_clip(0))
    assert read_video(target).shape == (CLIP_FRAMES, 32, 32, 3)


def test_sigkill_mid_run_then_resume(tmp_path: Path, uninterrupted: Path) -> None:
    """Kill a writing process at a random point, then finish its video from the record."""
    target = tmp_path / "killed.mp4"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_video import smooth_clip
        from svi.video import VideoWriter
        writer = VideoWriter({str(target)!r}, crf=0, pix_fmt="yuv444p")
        for k in range(10_000):  # writes until killed
            writer.write(smooth_clip(k % 5))
            print(writer.frames_written, flush=True)  # the caller's record
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        recorded = [int(child.stdout.readline()) for _ in range(2)]
        os.kill(child.pid, signal.SIGKILL)  # while it writes clip 3 or later
        child.wait(timeout=30)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert recorded == [5, 10]
    assert not target.exists()
    writer = VideoWriter.resume(target, expected_frames=recorded[-1])
    assert writer.frames_written == 10
    finish(writer)
    assert_same_as_uninterrupted(target, uninterrupted)


# --------------------------------------------------------------------------- readers


def test_read_gif(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    frames = [np.full((16, 24, 3), colour, dtype=np.uint8) for colour in colours]
    images = [Image.fromarray(frame) for frame in frames]
    path = tmp_path / "anim.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    video = read_video(path)
    np.testing.assert_array_equal(video, np.stack(frames))
    info = video_info(path)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (4, 10.0, 24, 16)
    assert read_video(path, max_frames=2).shape == (2, 16, 24, 3)


def test_read_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    path = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = read_image(path)
    assert image.shape == (5, 7, 3)
    assert image.dtype == np.uint8
    assert image[0, 0].tolist() == [10, 20, 30]
    video = read_video(path)
    assert video.shape == (1, 5, 7, 3)
    assert [frame.shape for frame in iter_frames(path)] == [(5, 7, 3)]
    info = video_info(path)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (1, 0.0, 7, 5)


def test_read_palette_and_grey_images(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 3))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image[1, 1].tolist() == [200, 100, 50]
    assert image[0, 0].tolist() == [0, 0, 0]
    Image.new("L", (2, 2), 77).save(tmp_path / "g.bmp")
    assert read_image(tmp_path / "g.bmp").tolist() == [[[77] * 3] * 2] * 2


def test_corrupt_video(tmp_path: Path) -> None:
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(SviError, match=r"random\.mp4: not a readable video or image"):
        read_video(path)
    with pytest.raises(SviError, match=r"random\.mp4"):
        video_info(path)


def test_text_file_is_not_a_video_and_bad_image(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("hello, this is not a video\n")
    with pytest.raises(SviError, match=r"notes\.mp4: not a readable video"):
        iter_frames(tmp_path / "notes.mp4")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SviError, match=r"fake\.png: not a readable image"):
        read_image(tmp_path / "fake.png")


def test_truncated_video_gives_the_complete_clips(tmp_path: Path) -> None:
    """Cut inside clip 3: the two complete clips decode; cut inside clip 1: SviError."""
    target = tmp_path / "whole.mp4"
    sizes = []
    with VideoWriter(target) as writer:
        for k in range(3):
            writer.write(smooth_clip(k))
            sizes.append(writer.partial_path.stat().st_size)
    data = target.read_bytes()
    assert len(data) == sizes[-1]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: (sizes[1] + sizes[2]) // 2])
    video = read_video(cut)
    assert video.shape == (2 * CLIP_FRAMES, 32, 32, 3)
    assert psnr(video, reference(2)) > 35.0
    # inside clip 1's key frame (16 bytes into its mdat payload): nothing decodes. A cut
    # nearer the record sometimes leaves a whole key frame (x264 sizes vary run to run).
    mdat = next(start for name, start, _ in mp4.iter_boxes(data, 0, len(data)) if name == b"mdat")
    cut.write_bytes(data[: mdat + 8 + 16])
    with pytest.raises(SviError, match=r"cut\.mp4"):
        read_video(cut)


def test_missing_directory_and_empty_inputs(tmp_path: Path) -> None:
    for reader in (read_video, read_image, video_info, iter_frames):
        with pytest.raises(SviError, match=r"missing\.mp4: file not found"):
            reader(tmp_path / "missing.mp4")
        with pytest.raises(SviError, match="is a directory"):
            reader(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SviError, match=r"empty\.mp4: file is empty"):
        read_video(tmp_path / "empty.mp4")


def test_read_video_max_frames(tmp_path: Path) -> None:
    target = write_video(tmp_path / "v.mp4", reference(2))
    assert read_video(target, max_frames=3).shape == (3, 32, 32, 3)
    with pytest.raises(SviError, match="max_frames must be at least 1"):
        read_video(target, max_frames=0)


def test_fractional_fps(tmp_path: Path) -> None:
    target = write_video(tmp_path / "ntsc.mp4", reference(2), fps=29.97)
    info = video_info(target)
    assert info["frames"] == 10
    assert info["fps"] == pytest.approx(29.97, abs=1e-3)
    assert os.path.getsize(target) > 0


def encode_with_pyav(path: Path, frames: np.ndarray, codec: str, pix_fmt: str) -> None:
    """Write ``frames`` with plain PyAV (a container layout VideoWriter does not produce)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [
        ("v.webm", "libvpx-vp9", "yuv420p"),
        ("v.mkv", "libx264", "yuv444p"),
        ("plain.mp4", "libx264", "yuv420p"),
    ],
)
def test_read_other_containers(tmp_path: Path, name: str, codec: str, pix_fmt: str) -> None:
    frames = reference(2)
    encode_with_pyav(tmp_path / name, frames, codec, pix_fmt)
    video = read_video(tmp_path / name)
    assert video.shape == (10, 32, 32, 3)
    assert psnr(video, frames) > 30.0
    info = video_info(tmp_path / name)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (10, 10.0, 32, 32)


def test_disk_error_during_write_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "full.mp4"
    writer = VideoWriter(target)
    writer.write(smooth_clip(0))
    size_after_clip0 = writer.partial_path.stat().st_size

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("svi.video.writer.os.fsync", disk_full)
    with pytest.raises(SviError, match=r"full\.partial\.mp4: cannot write video data: .*No space"):
        writer.write(smooth_clip(1))
    assert writer.partial_path.stat().st_size == size_after_clip0
    assert writer.frames_written == CLIP_FRAMES
    monkeypatch.undo()
    writer.write(smooth_clip(2))
    writer.close()
    expected = np.concatenate([smooth_clip(0), smooth_clip(2)])
    video = read_video(target)
    assert video.shape == (2 * CLIP_FRAMES, 32, 32, 3)
    assert psnr(video, expected) > 35.0
