"""Tests for svi.video_io: the crash-safe VideoWriter and the video/image readers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from svi.errors import SviError
from svi.video_io import (
    VideoWriter,
    iter_frames,
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
        from test_video_io import smooth_clip
        from svi.video_io import VideoWriter
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
    caplog.set_level(logging.WARNING, logger="svi.video_io")
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
    monkeypatch.setattr("svi.video_io.os.access", lambda *args, **kwargs: False)
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
    cut.write_bytes(data[: sizes[0] - 100])
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

    monkeypatch.setattr("svi.video_io.os.fsync", disk_full)
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
