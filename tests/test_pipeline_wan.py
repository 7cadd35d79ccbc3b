"""The clip loop on tiny real-class Wan folders (the code path of the real weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svi.errors import SviError
from svi.pipeline import GenerationConfig, SVIPipeline, rollout
from wan_fixtures import build_tiny_wan_folder

CLIP = {"height": 32, "width": 32, "num_frames": 9, "steps": 2}


@pytest.mark.parametrize("variant", ["wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"])
@pytest.mark.parametrize("handoff", ["pixel", "latent"])
def test_wan_rollout_frame_count(tmp_path: Path, variant: str, handoff: str) -> None:
    pipe = SVIPipeline.from_pretrained(build_tiny_wan_folder(tmp_path, variant), **CLIP)
    start = np.full((1, 32, 32, 3), 128, np.uint8)
    cfg = GenerationConfig(clips=2, motion_frames=1, handoff=handoff, cfg=2.0)
    video, clips = rollout(pipe, start, ["a cat"], cfg)
    assert video.shape == (2 * (9 - 1) + 1, 32, 32, 3)
    assert clips[0].frames.shape == (9, 32, 32, 3)


def test_wan21_feeds_clip_tokens_of_the_first_motion_frame(tmp_path: Path) -> None:
    pipe = SVIPipeline.from_pretrained(
        build_tiny_wan_folder(tmp_path, "wan2.1-i2v-14b-480p"), **CLIP
    )
    assert pipe.bundle.image_encoder is not None
    start = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    with_clip, _ = rollout(pipe, start, ["a cat"], GenerationConfig(clips=1))
    pipe.bundle.image_encoder = None
    without, _ = rollout(pipe, start, ["a cat"], GenerationConfig(clips=1))
    assert not np.array_equal(with_clip, without)


def test_ti2v_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(SviError, match="replacing the first latent frame"):
        SVIPipeline.from_pretrained(build_tiny_wan_folder(tmp_path, "wan2.2-ti2v-5b"))


def test_clip_overrides_are_checked(tmp_path: Path) -> None:
    folder = build_tiny_wan_folder(tmp_path, "wan2.2-i2v-a14b")
    with pytest.raises(SviError, match="4k"):
        SVIPipeline.from_pretrained(folder, **{**CLIP, "num_frames": 8})
    with pytest.raises(SviError, match="unknown clip settings"):
        SVIPipeline.from_pretrained(folder, fps=3)
