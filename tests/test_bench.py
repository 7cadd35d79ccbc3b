"""Weight-free metrics against world ground truth, the first-clip gate and drift curves."""

from __future__ import annotations

import numpy as np
import pytest

from svi.bench import metrics
from svi.bench.first_clip import evaluate_first_clip
from svi.pipeline import SVIPipeline
from svi.world import WorldConfig, render_episode, split_seeds
from world_fixtures import build_tiny_world_model


@pytest.fixture(scope="module")
def episode():
    return render_episode("consistent", split_seeds("val", 1)[0], 12, WorldConfig())


def test_truth_frames_score_perfectly(episode) -> None:
    t = episode.truth
    assert metrics.background_psnr(episode.frames, t.background, t.masks) == float("inf")
    assert metrics.presence_rate(episode.frames, t.masks, t.colours, t.present) == 1.0
    assert metrics.robust_background_error(episode.frames, t.background, t.masks) == 0.0
    assert metrics.mse(episode.frames, episode.frames) == 0.0


def test_presence_is_location_aware(episode) -> None:
    """The right colours in the wrong place do not count as present."""
    t = episode.truth
    shifted = np.roll(episode.frames, 12, axis=2)  # objects moved 12 px sideways
    assert metrics.presence_rate(shifted, t.masks, t.colours, t.present) < 0.5
    blank = t.background.copy()  # objects erased
    assert metrics.presence_rate(blank, t.masks, t.colours, t.present) == 0.0


def test_motion_and_colour_drift(episode) -> None:
    frozen = np.repeat(episode.frames[:1], 5, axis=0)
    assert metrics.motion_energy(frozen) == 0.0
    assert metrics.motion_energy(episode.frames) > 0.0
    darker = (episode.frames * 0.5).astype(np.uint8)
    assert metrics.colour_drift(darker, episode.frames) > metrics.colour_drift(
        episode.frames, episode.frames
    )


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory: pytest.TempPathFactory) -> SVIPipeline:
    return SVIPipeline.from_pretrained(build_tiny_world_model(tmp_path_factory.mktemp("m") / "m"))


def test_first_clip_report_has_the_gate_figures(tiny_pipe) -> None:
    report = evaluate_first_clip(tiny_pipe.bundle, split_seeds("val", 2), steps=2)
    assert report.scenes == 2 and len(report.presence_per_frame) == 3
    assert report.copy_presence > 0.9  # copying the last real frame keeps slow objects
    assert report.copy_mse < report.mse  # a random model is worse than copying
    assert not report.passed
