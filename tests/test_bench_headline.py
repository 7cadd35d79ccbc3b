"""The headline score (0 = the start frame held, 1 = the truth) on synthetic videos with
known answers, scored by the benchmark's own code against a world scene's truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from svi.bench import headline
from svi.bench.drift import add_headlines, score_video, score_with_references
from svi.bench.runner import reference_video
from svi.world import WorldConfig, render_episode, split_seeds

PER_CLIP, MOTION, CLIPS, GRID = 3, 2, 12, 4


@pytest.fixture(scope="module")
def scene():
    # one clip longer than scored: room for a video one clip ahead of the truth
    frames = (CLIPS + 1) * PER_CLIP + MOTION
    return render_episode("consistent", split_seeds("val", 3)[1], frames, WorldConfig())


def _headlines(scene, video) -> np.ndarray:
    rows = score_with_references(video, scene, PER_CLIP, MOTION, GRID)
    return np.asarray([r["headline"] for r in rows["video"]])


def _length() -> int:
    return CLIPS * PER_CLIP


def test_ratio_error_is_symmetric_and_zero_only_when_equal() -> None:
    assert headline.ratio_error(0.01, 0.01) == 0.0
    assert headline.ratio_error(0.04, 0.01) == pytest.approx(headline.ratio_error(0.01, 0.04))
    floor = headline.CHANGE_FLOOR
    assert headline.ratio_error(0.0, 0.01) == pytest.approx(1 - floor / (0.01 + floor))
    assert headline.ratio_error(0.02, 0.01) < headline.ratio_error(0.08, 0.01) < 1.0
    assert math.isnan(headline.ratio_error(math.nan, 0.01))
    np.testing.assert_allclose(headline.ratio_error(np.array([0.01, 0.03]), 0.01),
                               [0.0, 1 - 0.012 / 0.032])  # fmt: skip


def test_clip_error_by_hand() -> None:
    truth = {"identity_located": 1.0, "motion": 0.01 - headline.CHANGE_FLOOR,
             "seam_change": math.nan, "flicker": 0.0, "background_error": 0.0,
             "colour_drift": 0.0}  # fmt: skip
    row = {"identity_located": 0.5, "motion": 0.0, "seam_change": math.nan, "flicker": 0.0,
           "background_error": 0.05, "colour_drift": 0.5}  # fmt: skip
    errors = headline.clip_errors(row, truth)
    assert errors["objects"] == 0.5 and errors["flicker"] == 0.0
    assert errors["motion"] == pytest.approx(1 - headline.CHANGE_FLOOR / 0.01)
    assert math.isnan(errors["seam"]) and errors["background"] == pytest.approx(0.5)
    assert errors["colour"] == 1.0  # capped
    expected = (0.5 + errors["motion"] + 0.0 + 0.5 + 1.0) / 5  # the seam is undefined
    assert headline.clip_error(row, truth) == pytest.approx(expected)
    assert headline.headline(0.3, 0.6) == pytest.approx(0.5)
    assert headline.headline(0.0, 0.01) == 1.0  # a freeze error below the floor
    assert headline.headline(0.01, 0.01) == pytest.approx(1 - 0.01 / headline.ERROR_FLOOR)
    assert headline.headline(5.0, 0.5) == headline.HEADLINE_MIN
    assert math.isnan(headline.headline(math.nan, 0.5))


def test_the_truth_scores_one_and_the_freeze_zero(scene) -> None:
    truth = reference_video("truth", scene, _length(), MOTION)
    assert np.array_equal(truth, scene.frames[: _length()])  # the uint8 path is lossless
    assert (_headlines(scene, truth) == 1.0).all()
    rows = score_with_references(truth, scene, PER_CLIP, MOTION, GRID)
    errors = np.asarray([r["headline_error"] for r in rows["freeze"]])
    frozen = np.asarray([r["headline"] for r in rows["freeze"]])
    assert (errors > 0).all() and (frozen[errors >= headline.ERROR_FLOOR] == 0.0).all()
    assert frozen.mean() < 0.05


def test_holding_the_last_given_frame_is_near_the_freeze(scene) -> None:
    hold = reference_video("hold-last", scene, _length(), MOTION)
    assert (hold == scene.frames[MOTION - 1]).all()
    assert abs(_headlines(scene, hold).mean()) < 0.15


def test_pure_jitter_scores_below_the_freeze(scene) -> None:
    """Every frame the start frame moved a few pixels at random: lots of 'motion', the
    objects nowhere near where the truth has them."""
    rng = np.random.default_rng(0)
    jitter = np.stack([np.roll(scene.frames[0], tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
                       for _ in range(_length())])  # fmt: skip
    assert _headlines(scene, jitter).mean() < 0.0


def test_a_slow_colour_drift_lowers_the_headline_as_it_grows(scene) -> None:
    video = scene.frames[: _length()].astype(np.float32)
    tint = np.linspace(0, 70, _length())[:, None, None]  # grey levels added to red, growing
    video[..., 0] = np.clip(video[..., 0] + tint, 0, 255)
    h = _headlines(scene, video.round().astype(np.uint8))
    assert h[:3].mean() > h[-3:].mean() + 0.1
    assert h[0] > 0.75 and h[-1] < 0.65


def test_a_perfect_video_one_clip_late_is_below_the_truth(scene) -> None:
    ahead = scene.frames[PER_CLIP : PER_CLIP + _length()]
    h = _headlines(scene, ahead)
    assert 0.0 < h.mean() < 0.9


def test_headlines_need_the_references_rows(scene) -> None:
    video = scene.frames[: _length()]
    rows = {"video": [score_video(video, scene, PER_CLIP, GRID)]}
    with pytest.raises(KeyError):
        add_headlines(rows)
    with pytest.raises(ValueError, match="need as many truth and freeze rows"):
        headline.headline_rows(rows["video"][0], rows["video"][0][:2], rows["video"][0])


def _write_mp4(path, frames) -> None:
    """An mp4 written by PyAV itself (libx264 at its defaults): not svi's writer."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_bench_video_against_a_scene_truth(tmp_path, capsys) -> None:
    """`svi bench video FILE --truth-scene SEED --json` on videos the project did not
    write: the truth itself near 1, the start frame held near 0, the truth as a GIF on
    the raw path below the mp4; a wrong size or seed is one error line, exit 2."""
    import json

    from PIL import Image

    from svi.cli import main

    seed, frames = 4242, 3 * 8 + 2
    ep = render_episode("consistent", seed, frames, WorldConfig())
    _write_mp4(tmp_path / "truth.mp4", ep.frames)
    _write_mp4(tmp_path / "frozen.mp4", np.repeat(ep.frames[:1], frames, axis=0))
    images = [Image.fromarray(f) for f in ep.frames]
    images[0].save(tmp_path / "truth.gif", save_all=True, append_images=images[1:], duration=125)
    scores = {}
    for name in ("truth.mp4", "frozen.mp4", "truth.gif"):
        assert main(["bench", "video", str(tmp_path / name), "--truth-scene", str(seed),
                     "--json"]) == 0  # fmt: skip
        report = json.loads(capsys.readouterr().out)
        assert len(report["headline"]) == 9 and report["stride"] == 3  # 26 frames: 8 + a tail
        assert report["references_headline_mean"]["truth"] == 1.0
        assert report["references_headline_mean"]["freeze"] == 0.0
        scores[name] = report["headline_mean"]
        assert report["truth_path"] == ("raw" if name.endswith(".gif") else "mp4")
    assert scores["truth.mp4"] > 0.85 and abs(scores["frozen.mp4"]) < 0.1
    assert scores["frozen.mp4"] < scores["truth.gif"] < scores["truth.mp4"]
    assert main(["bench", "video", str(tmp_path / "truth.mp4"), "--truth-scene", str(seed)]) == 0
    assert "headline (0 = start frame held, 1 = truth): mean" in capsys.readouterr().out
    big = np.zeros((4, 64, 64, 3), np.uint8)
    Image.fromarray(big[0]).save(tmp_path / "big.png")
    for args, says in [([str(tmp_path / "big.png"), "--truth-scene", "1"], "is 64x64"),
                       ([str(tmp_path / "truth.mp4"), "--truth-scene", "-1"], "scene seed"),
                       ([str(tmp_path / "truth.mp4"), "--truth-scene", "1", "--kind", "x"],
                        "--kind must be"),
                       ([str(tmp_path / "truth.mp4"), "--truth-scene", "1", "--truth-path",
                         "jpeg"], "--truth-path")]:  # fmt: skip
        assert main(["bench", "video", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and says in err[0], err
