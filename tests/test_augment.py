"""Handcrafted augmentation of y's conditioning frames (the Table 6 contender of ERFT)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from svi.config import AugmentConfig, ErftConfig, TrainConfig, load_recipe
from svi.erft.augment import (
    CORRUPTIONS,
    add_gaussian_noise,
    augment_y,
    colour_jitter,
    gaussian_blur,
    gaussian_kernel,
)
from svi.errors import SviError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
C, F, H = 3, 5, 16  # latent channels, latent frames, size
OFF = {"p_blur": 0.0, "p_noise": 0.0, "p_colour": 0.0, "p_clean": 0.0}
ONLY = {  # each corruption alone, always on
    "blur": {**OFF, "p_blur": 1.0},
    "noise": {**OFF, "p_noise": 1.0},
    "colour": {**OFF, "p_colour": 1.0},
}


def _y(b: int = 8, seed: int = 0, size: int = H) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4 + C, F, size, size, generator=g)  # (B, 4 + C, f, h, w)


def _augment(y: torch.Tensor, seed: int = 0, **kw):
    return augment_y(y, AugmentConfig(**kw), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_changes_only_the_first_k_latent_frames(name: str) -> None:
    y = _y(b=16)
    copy = y.clone()
    out = _augment(y, frames=3, **ONLY[name])
    assert torch.equal(y, copy)  # input untouched
    assert torch.equal(out.y[:, :4], y[:, :4])  # mask channels bit-identical
    assert torch.equal(out.y[:, 4:, 3:], y[:, 4:, 3:])  # later latent frames too
    assert out.used[name].all() and not out.clean.any()
    assert all(not out.used[o].any() for o in CORRUPTIONS if o != name)
    changed = (out.y[:, 4:, :3] != y[:, 4:, :3]).flatten(1).any(1)
    strength = {"blur": out.blur_sigma, "noise": out.noise_std, "colour": out.offset.abs().sum(1)}
    assert changed[strength[name] > 0.2].all() and changed.float().mean() > 0.5


def test_window_longer_than_the_clip_uses_every_frame() -> None:
    y = _y()
    out = _augment(y, frames=8, **ONLY["noise"])
    assert torch.equal(out.y[:, :4], y[:, :4])
    assert (out.y[:, 4:] != y[:, 4:]).flatten(2).any(2).all()  # every frame of every channel


def test_zero_probabilities_and_clean_samples_are_the_identity() -> None:
    y = _y()
    assert torch.equal(_augment(y, **OFF).y, y)
    everything = {"p_blur": 1.0, "p_noise": 1.0, "p_colour": 1.0, "p_clean": 1.0}
    out = _augment(y, **everything)
    assert torch.equal(out.y, y) and out.clean.all()
    assert not any(u.any() for u in out.used.values())
    assert (out.blur_sigma == 0).all() and (out.noise_std == 0).all()
    assert (out.contrast == 1).all() and (out.offset == 0).all()
    zero_strength = {"blur_sigma": 0.0, "noise_std": 0.0, "contrast": 0.0, "brightness": 0.0,
                     "colour_shift": 0.0}  # fmt: skip
    weakest = _augment(y, **{**everything, "p_clean": 0.0}, **zero_strength)
    assert all(u.all() for u in weakest.used.values())
    torch.testing.assert_close(weakest.y, y, atol=1e-6, rtol=0)  # up to rounding


def test_the_generator_advances_the_same_whatever_the_coins() -> None:
    """A fixed number of draws per step: the loop's stream never shifts with the coins."""
    states = []
    for kw in (OFF, {"p_blur": 1.0, "p_noise": 1.0, "p_colour": 1.0, "p_clean": 0.0}):
        g = torch.Generator().manual_seed(3)
        augment_y(_y(), AugmentConfig(**kw), g)
        states.append(g.get_state())
    assert torch.equal(states[0], states[1])


def test_same_generator_same_result() -> None:
    a, b = _augment(_y(), seed=5), _augment(_y(), seed=5)
    assert torch.equal(a.y, b.y) and torch.equal(a.offset, b.offset)
    assert not torch.equal(a.y, _augment(_y(), seed=6).y)


def test_coin_rates() -> None:
    out = _augment(_y(b=4000, size=2), p_blur=0.3, p_noise=0.6, p_colour=0.1, p_clean=0.5)
    assert out.clean.float().mean() == pytest.approx(0.5, abs=0.03)
    for name, p in (("blur", 0.3), ("noise", 0.6), ("colour", 0.1)):
        assert out.used[name].float().mean() == pytest.approx(0.5 * p, abs=0.03)
        assert not (out.used[name] & out.clean).any()
    assert set(out.rates()) == {"clean", *CORRUPTIONS}


# -- blur ------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 9.0])
def test_blur_keeps_a_constant_image_constant(sigma: float) -> None:
    x = torch.full((C, 2, 8, 12), -0.37)
    torch.testing.assert_close(gaussian_blur(x, sigma), x, atol=1e-6, rtol=0)


def test_blur_is_the_separable_gaussian_of_an_impulse() -> None:
    sigma = 1.2
    k = gaussian_kernel(sigma).float()
    r = (k.numel() - 1) // 2
    assert k.sum().item() == pytest.approx(1.0) and torch.equal(k, k.flip(0))
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 10] = 1.0
    out = gaussian_blur(x, sigma)
    torch.testing.assert_close(out[0, 0, 10 - r : 11 + r, 10 - r : 11 + r], torch.outer(k, k))
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)  # mass kept away from edges


def test_blur_smooths_and_zero_sigma_is_the_identity() -> None:
    x = _y()[:, 4:]
    assert gaussian_blur(x, 0.0) is x
    assert gaussian_blur(x, 1.0).std() < 0.6 * x.std()
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(0.0)


# -- noise and colour -----------------------------------------------------------------
def test_noise_has_the_requested_std() -> None:
    x = torch.rand(C, 3, 64, 64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert (add_gaussian_noise(x, 0.2, noise) - x).std().item() == pytest.approx(0.2, rel=0.02)
    y = _y(b=32, size=48)
    out = _augment(y, noise_std=0.25, **ONLY["noise"])
    residual = (out.y[:, 4:, :3] - y[:, 4:, :3]).flatten(1).std(1)  # (B,), 20k values each
    torch.testing.assert_close(residual, out.noise_std, rtol=0.03, atol=1e-4)
    assert (out.noise_std >= 0).all() and (out.noise_std <= 0.25).all()
    big = _augment(_y(b=2000, size=1), noise_std=0.3, **ONLY["noise"])  # std ~ U[0, 0.3]
    assert big.noise_std.mean().item() == pytest.approx(0.15, abs=0.01)


def test_colour_jitter_shifts_channel_means_and_scales_contrast() -> None:
    x = torch.randn(C, 3, 8, 8)
    assert torch.allclose(colour_jitter(x, 1.0, torch.zeros(C)), x, atol=1e-6)
    offset = torch.tensor([0.1, -0.2, 0.05])
    out = colour_jitter(x, 0.7, offset)
    torch.testing.assert_close(out.mean((1, 2, 3)), x.mean((1, 2, 3)) + offset)
    torch.testing.assert_close(out.std((1, 2, 3)), 0.7 * x.std((1, 2, 3)))


def test_colour_strengths_stay_in_range() -> None:
    kw = {"contrast": 0.3, "brightness": 0.1, "colour_shift": 0.05}
    out = _augment(_y(b=500, size=1), **kw, **ONLY["colour"])
    assert ((out.contrast - 1).abs() <= 0.3).all() and (out.offset.abs() <= 0.15 + 1e-6).all()
    spread = out.offset - out.offset.mean(1, keepdim=True)  # per-channel part varies
    assert spread.abs().max() > 0.04


# -- config and recipe ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"p_blur": 1.5}, r"augment\.p_blur must be in \[0, 1\]"),
        ({"p_clean": -0.1}, r"augment\.p_clean"),
        ({"blur_sigma": -1.0}, r"augment\.blur_sigma must be finite and >= 0"),
        ({"noise_std": math.nan}, r"augment\.noise_std"),
        ({"colour_shift": math.inf}, r"augment\.colour_shift"),
        ({"contrast": 1.5}, r"augment\.contrast must be <= 1"),
        ({"frames": 0}, r"augment\.frames"),
        ({"p_noise": True}, r"augment\.p_noise must be a number"),
    ],
)
def test_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(SviError, match=match):
        AugmentConfig(**kw)


def test_erft_and_augment_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SviError, match=r"\[erft\].*\[augment\].*not both"):
        TrainConfig(erft=ErftConfig(), augment=AugmentConfig())
    recipe = tmp_path / "both.toml"
    recipe.write_text("[erft]\np_image = 0.9\n[augment]\np_blur = 0.5\n", encoding="utf-8")
    with pytest.raises(SviError, match="not both"):
        load_recipe(recipe)


def test_recipe_section_unknown_keys_and_types(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[augment]\np_blur = 1\nframes = 2\n", encoding="utf-8")
    cfg = load_recipe(good)
    assert cfg.augment == AugmentConfig(p_blur=1.0, frames=2) and cfg.erft is None
    bad = tmp_path / "bad.toml"
    bad.write_text("[augment]\np_blurr = 0.5\n", encoding="utf-8")
    with pytest.raises(SviError, match=r"unknown key bad\.toml\.augment\.p_blurr"):
        load_recipe(bad)
    bad.write_text('[augment]\nframes = "3"\n', encoding="utf-8")
    with pytest.raises(SviError, match="frames must be int"):
        load_recipe(bad)


def test_shipped_recipe_is_the_clean_anchor_lora_plus_augment() -> None:
    aug = load_recipe(RECIPES / "world-tiny-aug-anchor.toml")
    clean = load_recipe(RECIPES / "world-tiny-clean-lora-anchor.toml")
    assert aug.augment is not None and aug.erft is None
    assert dataclasses.replace(aug, augment=None) == clean  # same budget, data, seed, optim
    assert aug.steps == 1500 and aug.seed == 1 and aug.data.padding == "anchor"
    assert aug.augment.frames == 3 and aug.augment.p_clean == 0.2
