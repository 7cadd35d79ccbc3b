"""Identities of the flow-matching convention (noise at sigma = 1)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from svi import flow

sigmas_st = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
shifts_st = st.floats(min_value=0.2, max_value=20.0, allow_nan=False)


def _pair(seed: int, shape=(2, 3, 4, 5, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@given(u=sigmas_st, shift=shifts_st)
def test_shift_maps_unit_interval_onto_itself_and_pushes_to_noise(u: float, shift: float) -> None:
    s = flow.shift_sigmas(u, shift)
    assert 0.0 <= s <= 1.0 + 1e-12
    if shift >= 1:
        assert s >= u - 1e-12
    assert flow.shift_sigmas(0.0, shift) == 0.0
    assert math.isclose(flow.shift_sigmas(1.0, shift), 1.0)


def test_shift_rejects_nonpositive() -> None:
    with pytest.raises(ValueError):
        flow.shift_sigmas(0.5, 0.0)


@given(n=st.integers(min_value=1, max_value=200), shift=shifts_st)
def test_inference_grid_descends_from_one_to_zero(n: int, shift: float) -> None:
    s = flow.inference_sigmas(n, shift)
    assert s.shape == (n + 1,) and s.dtype == torch.float32
    assert s[0] == 1.0 and s[-1] == 0.0
    assert bool((s[:-1] > 0).all())
    assert bool((s[1:] < s[:-1]).all())


def test_inference_grid_values_shift5() -> None:
    s = flow.inference_sigmas(4, 5.0)
    u = torch.tensor([1.0, 0.75, 0.5, 0.25])
    expected = 5 * u / (1 + 4 * u)
    torch.testing.assert_close(s[:-1], expected)


def test_training_grid_matches_spec() -> None:
    s = flow.training_sigmas(1000, 5.0)
    assert s.shape == (1000,)
    assert s[0] == 1.0 and s[-1] > 0
    assert bool((s[1:] < s[:-1]).all())
    # most training samples are noisy: median sigma ~ 0.83 at shift 5
    assert 0.80 < float(s.median()) < 0.86


@settings(max_examples=50)
@given(seed=st.integers(0, 10_000), sigma=sigmas_st)
def test_one_step_integration_is_exact_for_true_velocity(seed: int, sigma: float) -> None:
    x0, noise = _pair(seed)
    x_t = flow.interpolate(x0, noise, sigma)
    v = flow.velocity_target(x0, noise)
    torch.testing.assert_close(flow.to_data_end(x_t, sigma, v), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flow.to_noise_end(x_t, sigma, v), noise, atol=1e-5, rtol=1e-5)


def test_interpolate_endpoints_and_per_batch_sigma() -> None:
    x0, noise = _pair(0)
    torch.testing.assert_close(flow.interpolate(x0, noise, 0.0), x0)
    torch.testing.assert_close(flow.interpolate(x0, noise, 1.0), noise)
    sig = torch.tensor([0.0, 1.0])
    mixed = flow.interpolate(x0, noise, sig)
    torch.testing.assert_close(mixed[0], x0[0])
    torch.testing.assert_close(mixed[1], noise[1])
    with pytest.raises(ValueError):
        flow.interpolate(x0, noise, torch.tensor([0.1, 0.2, 0.3]))


def test_dtype_is_preserved() -> None:
    x0, noise = (t.to(torch.float64) for t in _pair(1))
    assert flow.interpolate(x0, noise, torch.tensor([0.3, 0.4])).dtype == torch.float64
    x0h, noiseh = (t.to(torch.bfloat16) for t in _pair(1))
    assert flow.to_data_end(x0h, 0.5, noiseh).dtype == torch.bfloat16


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), shift=shifts_st)
def test_euler_sampler_with_true_velocity_lands_on_data(seed: int, n: int, shift: float) -> None:
    x0, noise = _pair(seed)
    v = flow.velocity_target(x0, noise)
    x = noise.clone()
    sig = flow.inference_sigmas(n, shift)
    for i in range(n):
        x = flow.euler_step(x, v, sig[i], sig[i + 1])
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=1e-4)


def test_cfg_combine() -> None:
    a, b = _pair(2)
    torch.testing.assert_close(flow.cfg_combine(a, b, 1.0), a)
    torch.testing.assert_close(flow.cfg_combine(a, b, 0.0), b)
    torch.testing.assert_close(flow.cfg_combine(a, b, 5.0), b + 5 * (a - b))


def test_timestep_weight_bell_curve() -> None:
    grid_t = flow.training_sigmas(1000, 5.0) * 1000
    w = flow.timestep_weight(grid_t)
    assert w.shape == (1000,)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-4)
    assert float(w[0]) == pytest.approx(0.0, abs=1e-6)  # t = 1000: pure noise, zero weight
    peak = float(flow.timestep_weight(torch.tensor(500.0)))
    assert peak == pytest.approx(float(w.max()), rel=1e-2)
    assert bool((w >= 0).all())


def test_sample_training_sigmas_is_seeded_and_on_grid() -> None:
    a = flow.sample_training_sigmas(64, torch.Generator().manual_seed(3))
    b = flow.sample_training_sigmas(64, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    grid = flow.training_sigmas()
    assert all(bool((grid == s).any()) for s in a)
