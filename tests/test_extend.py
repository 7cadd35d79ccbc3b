"""Extend any video (issue 27): its last frames carry into clip 0, its first frame is the
anchor; the output is the video followed by the new frames; resume and branch reproduce it.
The input is a synthetic noise-and-gradient video the project did not render."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from svi.branch import branch
from svi.cli import app
from svi.crop import fit_frames
from svi.errors import SviError
from svi.interrupts import Interrupted
from svi.manifest import manifest_path
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, run_generate
from svi.session import Hooks
from svi.video import read_video, write_video
from world_fixtures import build_tiny_world_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 frames, 48x40 (not the model's aspect), 12 fps: a moving gradient with noise."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:40, 0:48]
    frames = [np.stack([(x * 5 + 20 * t) % 256, (y * 6) % 256, np.full_like(x, 30 * t)], -1)
              + rng.integers(0, 40, (40, 48, 3)) for t in range(10)]  # fmt: skip
    path = tmp_path_factory.mktemp("input") / "in.mp4"
    write_video(path, np.clip(frames, 0, 255).astype(np.uint8), fps=12)
    return path


def _request(model: Path, video: Path, out: Path, **kw) -> GenerateRequest:
    return GenerateRequest(out=out, model=str(model), progress=False, lossless=True,
                           extend=video, config=GenerationConfig(steps=2, seed=3),
                           clips=4, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def extended(model: Path, video: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "ext.mp4"
    run_generate(_request(model, video, out), Hooks(keep_states=True))
    return out


def test_the_output_is_the_input_followed_by_the_new_frames(extended, video) -> None:
    out = read_video(extended)
    given = fit_frames(read_video(video), 32, 32)
    manifest = __import__("json").loads(manifest_path(extended).read_text())
    plan = manifest["inputs"]["plan"]
    assert (plan["extend_frames"], plan["skip_first"], plan["fps"]) == (10, 2, 12)
    assert len(out) == 10 + 4 * 3  # clip 0 drops the 2 frames it regenerates
    # lossless yuv444p: the RGB <-> YUV round trip is exact to a unit or two
    assert np.abs(out[:10].astype(int) - given).max() <= 2
    assert manifest["inputs"]["extend"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert manifest["inputs"]["start_shape"] == [3, 32, 32, 3]  # anchor + 2 carried frames


def test_new_only_writes_the_new_frames_alone(model, video, extended, tmp_path) -> None:
    out = tmp_path / "new.mp4"
    run_generate(_request(model, video, out, new_only=True))
    assert np.array_equal(read_video(out), read_video(extended)[10:])


def test_the_carried_frames_condition_clip_0(model, video, extended, tmp_path) -> None:
    """Another video with the same first frame: other carried frames, other clip 0."""
    frames = read_video(video)
    other = tmp_path / "other.mp4"
    write_video(other, np.concatenate([frames[:1], frames[1:][::-1]]), fps=12)
    out = tmp_path / "o.mp4"
    run_generate(_request(model, other, out, new_only=True))
    assert not np.array_equal(read_video(out)[:1], read_video(extended)[10:11])


def test_resume_and_branch_reproduce_the_extension(model, video, extended, tmp_path) -> None:
    out = tmp_path / "r.mp4"
    done = []
    hooks = Hooks(on_clip=lambda rec, clip: done.append(rec["index"]),
                  should_stop=lambda: len(done) >= 2)  # fmt: skip
    with pytest.raises(Interrupted):
        run_generate(_request(model, video, out), hooks)
    run_generate(replace(_request(model, video, out), resume=True))
    assert np.array_equal(read_video(out), read_video(extended))
    same = tmp_path / "b.mp4"
    branch(extended, 2, _request(model, video, same))
    assert np.array_equal(read_video(same), read_video(extended))


def test_latent_handoff_encodes_the_carried_frames(model, video, tmp_path) -> None:
    out = tmp_path / "lat.mp4"
    req = _request(model, video, out)
    run_generate(replace(req, config=replace(req.config, handoff="latent", motion_frames=1)))
    assert len(read_video(out)) > 10


def test_cli_extend_with_an_image_anchor(model, video, tmp_path) -> None:
    from PIL import Image

    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "cli.mp4"
    args = ["generate", "--model", str(model), "--out", str(out), "--extend", str(video),
            "--image", str(tmp_path / "a.png"), "--prompt", "a red disc", "--clips", "2",
            "--steps", "1", "--no-progress", "--lossless"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(read_video(out)) == 10 + 2 * 3


def test_a_video_shorter_than_the_carry_is_refused(model, video, tmp_path) -> None:
    short = tmp_path / "short.mp4"
    write_video(short, read_video(video)[:1], fps=12)
    out = tmp_path / "s.mp4"
    with pytest.raises(SviError, match="has 1 frame; the hand-off carries 2"):
        run_generate(_request(model, short, out))
    assert not out.exists() and not manifest_path(out).exists()


def test_a_wan_2_0_pro_extension_carries_the_last_frame_as_a_latent(video, tmp_path) -> None:
    """Tiny Wan 2.2 A14B with --variant 2.0-pro (latent hand-off, anchor-first, head
    stitching): the video's last frame is encoded by the VAE into clip 0's carried latent;
    another last frame, another clip 0; the output is the video then 2 x (9 - 4) frames."""
    from wan_fixtures import build_tiny_wan_folder

    folder = build_tiny_wan_folder(tmp_path, "wan2.2-i2v-a14b")
    frames = read_video(video)
    other = tmp_path / "other.mp4"
    write_video(other, np.concatenate([frames[:-1], frames[:1]]), fps=12)

    def run(source: Path, out: Path) -> np.ndarray:
        run_generate(GenerateRequest(out=out, model=str(folder), height=32, width=32,
                                     num_frames=9, extend=source, prompt="a cat", clips=2,
                                     config=GenerationConfig(variant="2.0-pro", steps=2),
                                     lossless=True, progress=False))  # fmt: skip
        return read_video(out)

    a, b = run(video, tmp_path / "a.mp4"), run(other, tmp_path / "b.mp4")
    plan = __import__("json").loads(manifest_path(tmp_path / "a.mp4").read_text())["inputs"]["plan"]
    assert (plan["handoff"], plan["padding"], plan["skip_first"]) == ("latent", "anchor-first", 4)
    assert len(a) == len(b) == 10 + 2 * 5
    assert not np.array_equal(a[10:15], b[10:15])
