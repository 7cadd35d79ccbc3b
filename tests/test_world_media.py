"""Talking (audio drives the mouth) and dancing (the skeleton drives the figure)."""

from __future__ import annotations

import numpy as np
import pytest

from svi.world import SAMPLE_RATE, WorldConfig, render_episode
from svi.world.dancing import JOINTS, LIMBS
from svi.world.files import read_wav, write_wav
from svi.world.palette import MOUTH_COLOUR
from svi.world.talking import REFERENCE_RMS, audio_envelope


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float), b.astype(float))[0, 1])


@pytest.mark.parametrize("seed", range(3))
def test_talking_audio_drives_the_mouth(seed):
    config = WorldConfig()
    episode = render_episode("talking", seed, 96, config)
    audio, envelope, truth = episode.audio, episode.audio_envelope, episode.truth
    assert audio.dtype == np.float32 and audio.shape == (96 * SAMPLE_RATE // config.fps,)
    assert np.abs(audio).max() <= 1.0
    assert envelope.shape == (96,) and envelope.min() >= 0 and envelope.max() <= 1
    assert (envelope < 0.05).any() and (envelope > 0.3).any()  # pauses and syllables
    assert np.array_equal(envelope, audio_envelope(audio, 96, config.fps))
    assert corr(truth.mouth_open, envelope) > 0.9
    assert np.all(np.diff(truth.mouth_open[np.argsort(envelope)]) >= 0)  # monotone
    assert truth.names[3] == "mouth"
    assert corr(truth.masks[:, 3].sum(axis=(1, 2)), envelope) > 0.9
    # dark pixels in the lower half of the face follow the envelope
    centre, radius = truth.centres[:, 0], truth.sizes[0, 0]
    x = np.arange(32) + 0.5
    dx = x[None, None, :] - centre[:, 0, None, None]
    dy = x[None, :, None] - centre[:, 1, None, None]
    region = (dx**2 + dy**2 <= (0.95 * radius) ** 2) & (dy > 0)
    luminance = episode.frames.astype(float) @ np.array([0.299, 0.587, 0.114])
    dark = ((luminance < 80) & region).sum(axis=(1, 2))
    assert corr(dark, envelope) > 0.9
    assert np.array_equal(truth.colours[0, 3], MOUTH_COLOUR[1])
    assert truth.present.all()  # the closed mouth is still a line


def test_talking_prompts_follow_speech():
    episode = render_episode("talking", 1, 160)
    colour = episode.truth.names[0].split(" ")[0]
    assert all(colour in p and "face" in p for p in episode.prompts)
    assert len(episode.prompts) == 20


def test_envelope_from_wav_round_trip(tmp_path):
    episode = render_episode("talking", 4, 40)
    path = write_wav(tmp_path / "a.wav", episode.audio)
    audio, rate = read_wav(path)
    assert rate == SAMPLE_RATE and len(audio) == len(episode.audio)
    again = audio_envelope(audio, 40, episode.config.fps)
    assert np.allclose(again, episode.audio_envelope, atol=2e-3)
    relative = audio_envelope(audio, 40, episode.config.fps, reference_rms=None)
    assert relative.max() == pytest.approx(1.0)
    assert REFERENCE_RMS > 0


@pytest.mark.parametrize("size", [16, 32, 64])
def test_skeleton_drives_the_figure(size):
    config = WorldConfig(size=size)
    episode = render_episode("dancing", 2, 48, config)
    truth, frames, pose = episode.truth, episode.frames, episode.pose_frames
    assert truth.joints.shape == (48, len(JOINTS), 2) and truth.joint_names == list(JOINTS)
    assert 13 <= len(JOINTS) <= 15 and pose.shape == frames.shape
    colour = truth.colours[0, 0]
    checked = 0
    for t in range(48):
        for a, b in LIMBS:
            x, y = (truth.joints[t, a] + truth.joints[t, b]) / 2
            col, row = int(np.floor(x)), int(np.floor(y))
            if 0 <= col < size and 0 <= row < size:
                assert np.array_equal(frames[t, row, col], colour)
                assert truth.masks[t, 0, row, col]
                assert pose[t, row, col].max() > 0
                checked += 1
    assert checked > 48 * len(LIMBS) * 0.9
    # the pose video is black away from the figure
    assert pose[~truth.masks[:, 0]].max() == 0


def test_dance_is_smooth_and_grounded():
    config = WorldConfig()
    truth = render_episode("dancing", 5, 80, config).truth
    step = np.linalg.norm(np.diff(truth.joints, axis=0), axis=-1)
    assert step.max() < 4.0 and step.mean() > 0.1
    feet = truth.joints[:, [JOINTS.index("right_foot"), JOINTS.index("left_foot")], 1]
    assert np.allclose(feet.max(axis=1), 0.95 * 32, atol=1e-3)


def test_dancing_prompts_name_the_figure():
    episode = render_episode("dancing", 0, 64)
    colour = episode.truth.names[0].split(" ")[0]
    assert all(f"{colour} stick figure" in p for p in episode.prompts)
