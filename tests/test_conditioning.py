"""Layout of the I2V conditioning y (SVI_SPEC section 2)."""

from __future__ import annotations

import pytest
import torch

from svi.conditioning import (
    build_mask,
    build_y,
    build_y_from_latents,
    conditioning_video,
    mask_frames_for,
)
from svi.errors import SviError
from svi.models.codec import PixelCodec


class _TemporalCodec:
    """Averages groups of 4 frames after the causal first one (a Wan-like frame rule)."""

    temporal_factor = 4
    latent_channels = 3

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        first, rest = video[:, :, :1], video[:, :, 1:]
        b, c, f, h, w = rest.shape
        groups = rest.reshape(b, c, f // 4, 4, h, w).mean(3)
        return torch.cat([first, groups], dim=2)


def _video(b=2, m=2, h=8, w=8) -> torch.Tensor:
    return torch.rand(b, 3, m, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_wan_mask_first_frame_only_folds_into_latent_frame_zero() -> None:
    mask = build_mask(1, 81, 4, 4, given_frames=1, temporal_factor=4)
    assert mask.shape == (1, 4, 21, 4, 4)
    assert bool((mask[:, :, 0] == 1).all())
    assert bool((mask[:, :, 1:] == 0).all())


def test_wan_mask_with_five_given_frames_folds_like_wan() -> None:
    # pixel frames 0..4 given: latent frame 0 (frame 0 x4) and latent frame 1 (frames 1..4)
    mask = build_mask(1, 9, 1, 1, given_frames=5, temporal_factor=4)[0, :, :, 0, 0]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]]
    mask = build_mask(1, 9, 1, 1, given_frames=2, temporal_factor=4)[0, :, :, 0, 0]
    assert mask[:, 1].tolist() == [1, 0, 0, 0]


def test_mask_for_unit_temporal_factor_repeats_over_channels() -> None:
    mask = build_mask(3, 5, 2, 2, given_frames=2, temporal_factor=1)
    assert mask.shape == (3, 4, 5, 2, 2)
    assert mask[0, :, :, 0, 0].tolist() == [[1, 1, 0, 0, 0]] * 4


def test_frame_rule_is_enforced() -> None:
    with pytest.raises(SviError):
        build_mask(1, 8, 1, 1, given_frames=1, temporal_factor=4)


@pytest.mark.parametrize("padding", ["anchor", "zeros", "last"])
def test_conditioning_video_padding(padding: str) -> None:
    motion = _video(m=2)
    anchor = torch.full((2, 3, 8, 8), 0.5)
    video = conditioning_video(motion, 5, padding, anchor)
    assert video.shape == (2, 3, 5, 8, 8)
    torch.testing.assert_close(video[:, :, :2], motion)
    expected = {"anchor": anchor, "zeros": torch.zeros_like(anchor), "last": motion[:, :, 1]}
    for t in range(2, 5):
        torch.testing.assert_close(video[:, :, t], expected[padding])


def test_conditioning_errors() -> None:
    with pytest.raises(SviError, match="anchor"):
        conditioning_video(_video(), 5, "anchor", None)
    with pytest.raises(SviError, match="padding"):
        conditioning_video(_video(), 5, "mirror", None)
    with pytest.raises(SviError, match="do not fit"):
        conditioning_video(_video(m=6), 5, "zeros", None)
    with pytest.raises(SviError, match="mask mode"):
        mask_frames_for("all", 2)


def test_build_y_pixel_codec_layout() -> None:
    motion = _video(m=2)
    y = build_y(PixelCodec(), motion, 5, padding="last", mask="motion")
    assert y.shape == (2, 4 + 3, 5, 8, 8)
    assert y[:, :4, :2].eq(1).all() and y[:, :4, 2:].eq(0).all()
    torch.testing.assert_close(y[:, 4:, :2], motion)
    y_first = build_y(PixelCodec(), motion, 5, padding="zeros", mask="first")
    assert y_first[:, :4, 0].eq(1).all() and y_first[:, :4, 1:].eq(0).all()


def test_build_y_temporal_codec_shapes() -> None:
    motion = _video(m=5)
    y = build_y(_TemporalCodec(), motion, 9, padding="zeros", mask="first")
    assert y.shape == (2, 7, 3, 8, 8)
    assert y[:, :4, 0].eq(1).all() and y[:, :4, 1:].eq(0).all()


def test_latent_handoff_matches_pixel_path_for_pixel_codec() -> None:
    motion = _video(m=2)
    anchor = _video(m=1)
    codec = PixelCodec()
    for padding in ("anchor", "zeros", "last"):
        pixel = build_y(codec, motion, 5, padding=padding, mask="motion", anchor=anchor[:, :, 0])
        latent = build_y_from_latents(
            codec.encode(motion), 5, 1, padding=padding, mask="motion",
            anchor_latent=codec.encode(anchor),
        )  # fmt: skip
        torch.testing.assert_close(pixel, latent)


def test_latent_handoff_wan_frame_rule() -> None:
    lat = torch.randn(1, 16, 2, 4, 4)  # 2 latent frames carried = 5 pixel frames
    y = build_y_from_latents(lat, 21, 4, padding="zeros", mask="first")
    assert y.shape == (1, 20, 21, 4, 4)
    assert y[:, :4, 0].eq(1).all() and y[:, :4, 1:].eq(0).all()
    torch.testing.assert_close(y[:, 4:, :2], lat)
    assert y[:, 4:, 2:].eq(0).all()
