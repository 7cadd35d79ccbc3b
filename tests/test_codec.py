"""Codecs: the identity pixel codec, the Wan VAE codec (tiny random VAE), psnr."""

from __future__ import annotations

import math

import pytest
import torch

from svi.errors import SviError
from svi.models.codec import Codec, PixelCodec, WanVAECodec, psnr
from wan_fixtures import tiny_wan_vae


def _video(frames: int = 9, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1  # (B, 3, F, H, W)


@pytest.fixture(scope="module")
def vae():
    return tiny_wan_vae()


@pytest.fixture(scope="module")
def codec(vae) -> WanVAECodec:
    return WanVAECodec(vae)


# --------------------------------------------------------------------------- PixelCodec


def test_pixel_codec_is_exact_identity():
    c = PixelCodec()
    assert isinstance(c, Codec)
    x = _video(frames=5, size=8)
    z = c.encode(x)
    assert z.shape == x.shape
    assert torch.equal(c.decode(z), x)
    assert (c.latent_channels, c.spatial_factor, c.temporal_factor) == (3, 1, 1)
    assert c.latent_frames(7) == 7 and c.pixel_frames(7) == 7


def test_pixel_codec_decode_clamps():
    c = PixelCodec()
    z = torch.full((1, 3, 2, 4, 4), 3.0)
    z[:, :, 0] = -5.0
    out = c.decode(z)
    assert out.max() == 1.0 and out.min() == -1.0


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(1, 3, 4, 4),  # no frame axis
        torch.zeros(1, 4, 2, 4, 4),  # 4 channels
        torch.zeros(1, 3, 2, 4, 4, dtype=torch.uint8),  # not float
        torch.full((1, 3, 2, 4, 4), 2.0),  # out of range: [0, 255] or unnormalised data
    ],
)
def test_pixel_codec_rejects_bad_input(bad):
    with pytest.raises(SviError):
        PixelCodec().encode(bad)


# --------------------------------------------------------------------------- WanVAECodec


def test_wan_codec_reads_factors_from_config(codec, vae):
    assert isinstance(codec, Codec)
    assert vae.config.scale_factor_spatial == 8 and vae.config.scale_factor_temporal == 4
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (16, 8, 4)


def test_wan_codec_frame_rule(codec):
    assert [codec.latent_frames(f) for f in (1, 5, 9, 81)] == [1, 2, 3, 21]
    assert [codec.pixel_frames(f) for f in (1, 3, 21)] == [1, 9, 81]
    for bad in (0, 8, 10, 80):
        with pytest.raises(SviError, match="4k\\+1"):
            codec.latent_frames(bad)
    with pytest.raises(SviError, match="4k\\+1"):
        codec.encode(_video(frames=8))


def test_wan_codec_shapes_and_round_trip(codec):
    x = _video()
    z = codec.encode(x)
    assert z.shape == (1, 16, 3, 4, 4) and z.dtype == torch.float32
    y = codec.decode(z)
    assert y.shape == x.shape
    assert float(y.abs().max()) <= 1.0


def test_wan_codec_normalisation_matches_manual(codec, vae):
    x = _video(seed=1)
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        raw = vae.encode(x).latent_dist.mode()
    z = codec.encode(x)
    torch.testing.assert_close(z, (raw - mean) / std)
    with torch.no_grad():
        expected = vae.decode(z * std + mean).sample.clamp(-1, 1)
    torch.testing.assert_close(codec.decode(z), expected)
    torch.testing.assert_close(codec.denormalise(codec.normalise(raw)), raw)


def test_wan_codec_sampling_uses_the_generator(vae):
    x = _video(seed=2)
    a = WanVAECodec(vae, sample=True, generator=torch.Generator().manual_seed(3)).encode(x)
    b = WanVAECodec(vae, sample=True, generator=torch.Generator().manual_seed(3)).encode(x)
    mode = WanVAECodec(vae).encode(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, mode)


def test_wan_codec_rejects_bad_sizes(codec):
    with pytest.raises(SviError, match="spatial factor"):
        codec.encode(_video(size=20))
    with pytest.raises(SviError, match="latents"):
        codec.decode(torch.zeros(1, 4, 3, 4, 4))


def test_wan_codec_rejects_inconsistent_configs():
    from diffusers import AutoencoderKLWan

    small = {"base_dim": 4, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
    short_stats = AutoencoderKLWan(z_dim=4, **small)  # default 16-entry latents_mean
    with pytest.raises(SviError, match="z_dim=4"):
        WanVAECodec(short_stats)
    wrong_factor = AutoencoderKLWan(scale_factor_spatial=16, **small)  # layers compress 8x
    with pytest.raises(SviError, match="scale_factor_spatial=16"):
        WanVAECodec(wrong_factor)


def test_wan22_style_codec_48_channels_16x():
    codec = WanVAECodec(tiny_wan_vae(ti2v=True))
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (48, 16, 4)
    z = codec.encode(_video(size=64))
    assert z.shape == (1, 48, 3, 4, 4)
    assert codec.decode(z).shape == (1, 3, 9, 64, 64)


# --------------------------------------------------------------------------- psnr


def test_psnr_values():
    a = torch.zeros(2, 3, 4, 4)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 0.1) == pytest.approx(10 * math.log10(4 / 0.01))
    u = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    assert psnr(u, u + 1) == pytest.approx(10 * math.log10(255**2))
    # uint8 vs float: uint8 is mapped to [-1, 1] first (0 -> -1)
    assert psnr(u, torch.full((1, 3, 4, 4), -1.0)) == math.inf
    with pytest.raises(SviError):
        psnr(a, torch.zeros(1))
