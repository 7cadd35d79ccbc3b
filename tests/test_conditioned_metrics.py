"""Talking / dancing metrics of svi.bench.conditioned on world episodes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from svi.bench import conditioned as c
from svi.world import WorldConfig, render_episode, split_seeds
from svi.world.palette import MOUTH_COLOUR, distance

MOUTH = np.asarray(MOUTH_COLOUR[1], np.uint8)
FRAMES = 64
CLIP = WorldConfig().clip_frames


def _blur(frames: np.ndarray) -> np.ndarray:
    """3x3 box blur per channel, as a soft generated video would look."""
    out = ndimage.uniform_filter(frames.astype(np.float32), size=(1, 3, 3, 1), mode="nearest")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _delay(frames: np.ndarray, lag: int) -> np.ndarray:
    """frames[t - lag] (edge frames repeated): lag > 0 is a late video, < 0 an early one."""
    index = np.clip(np.arange(len(frames)) - lag, 0, len(frames) - 1)
    return frames[index]


@pytest.fixture(scope="module")
def talking():
    # test seed 6: an orange face (its blurred eyes come within tolerance of the mouth
    # colour) and a silent clip (clip 1)
    episode = render_episode("talking", split_seeds("test", 2)[1], FRAMES, WorldConfig())
    return episode, episode.truth.colours[0, 0]


@pytest.fixture(scope="module")
def dancing():
    episode = render_episode("dancing", split_seeds("test", 1)[0], FRAMES, WorldConfig())
    return episode, episode.truth.colours[0, 0]


def test_true_talking_video_is_in_sync(talking) -> None:
    episode, face = talking
    opening = c.mouth_opening(episode.frames, MOUTH, face)
    assert (opening > 0).all()
    scores = c.sync_scores(opening, episode.audio_envelope, CLIP)
    assert scores.overall > 0.98 and not scores.overall_degenerate  # measured 0.989
    assert scores.clips.shape == (FRAMES // CLIP,)
    # the silent clip is flagged (its envelope is a noise floor), every other one is ~1
    assert scores.degenerate.tolist() == [False, True] + [False] * 6
    assert scores.clips[1] == 0.0
    assert scores.clips[~scores.degenerate].min() > 0.95
    lag, r = c.sync_lag(opening, episode.audio_envelope)
    assert lag == 0 and r == pytest.approx(scores.overall)
    # the gamma the world used makes the measured opening more linear in the target
    assert scores.overall > c.sync_scores(opening, episode.audio_envelope, CLIP, 1.0).overall


def test_frozen_talking_video_is_flagged_not_nan(talking) -> None:
    episode, face = talking
    frozen = np.repeat(episode.frames[:1], FRAMES, axis=0)
    opening = c.mouth_opening(frozen, MOUTH, face)
    scores = c.sync_scores(opening, episode.audio_envelope, CLIP)
    assert scores.overall == 0.0 and scores.overall_degenerate
    assert scores.degenerate.all() and (scores.clips == 0.0).all()
    assert c.sync_lag(opening, episode.audio_envelope) == (0, 0.0)


@pytest.mark.parametrize("shift", [2, -2, 3])
def test_sync_lag_recovers_a_time_shift(talking, shift: int) -> None:
    episode, face = talking
    opening = c.mouth_opening(_delay(episode.frames, shift), MOUTH, face)
    lag, r = c.sync_lag(opening, episode.audio_envelope)
    assert lag == shift and r > 0.98
    assert c.sync_scores(opening, episode.audio_envelope, CLIP).overall < 0.6


def test_mouth_survives_blur_and_colour_noise(talking) -> None:
    episode, face = talking
    blurred = c.mouth_opening(_blur(episode.frames), MOUTH, face)
    assert c.sync_scores(blurred, episode.audio_envelope, CLIP).overall > 0.95  # 0.990
    rng = np.random.default_rng(0)
    noise = rng.integers(-20, 21, size=episode.frames.shape)
    noisy = np.clip(episode.frames.astype(np.int32) + noise, 0, 255).astype(np.uint8)
    assert distance(noisy, episode.frames).max() > 30
    opening = c.mouth_opening(noisy, MOUTH, face)
    assert c.sync_scores(opening, episode.audio_envelope, CLIP).overall > 0.95


def test_mouth_coloured_background_is_ignored() -> None:
    seed = split_seeds("test", 3)[2]  # a plain maroon background, 25 RGB from the mouth
    episode = render_episode("talking", seed, FRAMES, WorldConfig())
    assert episode.truth.meta["backgrounds"][0]["colours"] == ["maroon"]
    assert (distance(episode.frames[0], MOUTH) < c.MOUTH_TOLERANCE).mean() > 0.5
    for face in (episode.truth.colours[0, 0], None):  # the face, or only the border rule
        opening = c.mouth_opening(episode.frames, MOUTH, face)
        assert opening.max() < 8  # the mouth's columns, not the background's 32 px
        assert c.sync_scores(opening, episode.audio_envelope, CLIP).overall > 0.98


def test_no_mouth_gives_zero(talking) -> None:
    episode, face = talking
    background = episode.truth.background  # the frames without the face
    assert (c.mouth_opening(background, MOUTH, face) == 0).all()
    assert (c.mouth_opening(background, MOUTH) == 0).all()


def test_true_dancing_video_matches_its_skeleton(dancing) -> None:
    episode, colour = dancing
    errors = c.pose_error(episode.frames, episode.truth.joints, colour)
    assert errors.found.all()
    assert errors.joint.max() < 0.6  # measured 0.47: a joint is inside its 2-px-wide line
    assert (errors.chamfer == 0).all() and (errors.iou == 1).all()  # the same rasteriser


def test_time_shifted_dance_is_worse(dancing) -> None:
    episode, colour = dancing
    true = c.pose_error(episode.frames, episode.truth.joints, colour)
    late = c.pose_error(episode.frames[:-4], episode.truth.joints[4:], colour)
    # measured: joint 0.94 (true <= 0.47), chamfer 0.77 (true 0), IoU 0.34 (true 1)
    assert late.joint.mean() > 1.5 * true.joint.max()
    assert late.chamfer.mean() > 0.5 and late.iou.mean() < 0.5


def test_missing_figure_gets_the_diagonal(dancing) -> None:
    episode, colour = dancing
    frames = episode.frames.copy()
    frames[5] = episode.truth.background[5]
    errors = c.pose_error(frames, episode.truth.joints, colour)
    diagonal = 32 * np.sqrt(2)
    assert not errors.found[5] and errors.found[np.arange(FRAMES) != 5].all()
    assert errors.joint[5] == pytest.approx(diagonal) == errors.chamfer[5]
    assert errors.iou[5] == 0.0


def test_frozen_dance_error_grows(dancing) -> None:
    episode, colour = dancing
    frozen = np.repeat(episode.frames[:1], FRAMES, axis=0)
    errors = c.pose_error(frozen, episode.truth.joints, colour)
    assert errors.iou[0] == 1.0 and errors.joint[0] < 0.6
    # the skeleton moves away from frame 0 over the first clip...
    assert np.all(np.diff(errors.iou[:CLIP]) < 0)
    assert np.all(np.diff(errors.chamfer[:CLIP]) > 0)
    assert np.all(np.diff(errors.joint[:CLIP]) > 0)
    # ... and the dance never comes back to it (joint error is the weakest signal: a
    # joint is often near SOME pixel of the frozen figure; measured clip minimum 0.66)
    assert c.clip_means(errors.iou, CLIP)[1:].max() < 0.5
    assert c.clip_means(errors.joint, CLIP)[1:].min() > 1.5 * errors.joint[0]


def test_psnr_ssim_known_values() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 246, size=(3, 20, 24, 3)).astype(np.uint8)
    psnr, ssim = c.psnr_ssim(a, a)
    assert np.isinf(psnr).all() and (ssim == 1.0).all()
    psnr, ssim = c.psnr_ssim(a + np.uint8(10), a)  # MSE 100
    assert psnr == pytest.approx(np.full(3, 10 * np.log10(255.0**2 / 100)), abs=1e-9)
    assert (ssim < 1).all()
    noisy = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    psnr_ab, ssim_ab = c.psnr_ssim(noisy, a)
    psnr_ba, ssim_ba = c.psnr_ssim(a, noisy)
    assert (ssim_ab < 0.95).all() and (ssim_ab > 0).all()
    assert ssim_ab == pytest.approx(ssim_ba, abs=1e-12) and (psnr_ab == psnr_ba).all()
    smooth = _blur(_blur(a))  # structure survives a little noise better on smooth images
    assert c.psnr_ssim(smooth, a)[1].mean() < 1


def test_clip_means() -> None:
    assert c.clip_means(np.arange(1.0, 6.0), 2).tolist() == [1.5, 3.5, 5.0]
    assert c.clip_means(np.zeros(0), 3).shape == (0,)


def test_black_video_gives_no_nan(talking, dancing) -> None:
    talk, face = talking
    dance, colour = dancing
    black = np.zeros_like(talk.frames)
    opening = c.mouth_opening(black, MOUTH, face)
    assert (opening == 0).all()
    scores = c.sync_scores(opening, talk.audio_envelope, CLIP)
    assert scores.overall_degenerate and scores.degenerate.all()
    zero = c.sync_scores(opening, np.zeros(FRAMES), CLIP)
    assert zero.overall == 0 and (zero.clips == 0).all()
    errors = c.pose_error(black, dance.truth.joints, colour)
    assert not errors.found.any()
    psnr, ssim = c.psnr_ssim(black, talk.frames)
    psnr_0, ssim_0 = c.psnr_ssim(black, black)
    values = [opening, scores.clips, errors.chamfer, errors.joint, errors.iou, psnr, ssim, ssim_0]
    values += [[scores.overall, *c.sync_lag(opening, talk.audio_envelope)]]
    assert not any(np.isnan(np.asarray(v, np.float64)).any() for v in values)
    assert np.isfinite(psnr).all() and np.isinf(psnr_0).all() and (ssim_0 == 1).all()
