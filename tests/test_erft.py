"""ERFT: one-step errors, the error bank, injection and banking (SVI_SPEC section 3)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import Tensor

from svi import flow
from svi.config import ErftConfig
from svi.erft import ErrorBank, ErrorInjector, Injection, make_banks, one_step_errors
from svi.errors import SviError

SHAPE = (2, 5, 4, 4)  # one error / one sample latent: (C, f, h, w)
C, F = SHAPE[0], SHAPE[1]
FAST = settings(max_examples=40, deadline=None)


def _entries(bank: ErrorBank, b: int) -> Tensor:
    """All stored entries of bin ``b`` as float32 (n, *shape)."""
    sd = bank.state_dict()
    assert bank.shape is not None
    if f"bin.{b}" not in sd:
        return torch.empty(0, *bank.shape)
    return sd[f"bin.{b}"].float().reshape(-1, *bank.shape)


def _all_entries(bank: ErrorBank) -> Tensor:
    return torch.cat([_entries(bank, b) for b in range(bank.num_bins)])


def _matches_one(x: Tensor, candidates: Tensor, atol: float = 1e-5) -> bool:
    return any(torch.allclose(x, c, atol=atol, rtol=0) for c in candidates)


# -- one-step errors -----------------------------------------------------------------
def test_one_step_errors_zero_when_prediction_is_the_target():
    g = torch.Generator().manual_seed(0)
    x_t, v = torch.randn(3, *SHAPE, generator=g), torch.randn(3, *SHAPE, generator=g)
    e_noise, e_video = one_step_errors(x_t, torch.tensor([0.1, 0.5, 0.9]), v, v.clone())
    assert torch.count_nonzero(e_noise) == 0 and torch.count_nonzero(e_video) == 0
    assert e_noise.shape == x_t.shape and e_video.shape == x_t.shape


def test_one_step_errors_identities_and_meaning():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, *SHAPE, generator=g), torch.randn(3, *SHAPE, generator=g)
    s = torch.tensor([0.05, 0.5, 0.97])
    x_t = flow.interpolate(x0, eps, s)
    v_star = flow.velocity_target(x0, eps)
    v_pred = v_star + 0.3 * torch.randn(3, *SHAPE, generator=g)
    e_noise, e_video = one_step_errors(x_t, s, v_pred, v_star)
    sb = s.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(e_noise, (1 - sb) * (v_pred - v_star))
    torch.testing.assert_close(e_video, -sb * (v_pred - v_star))
    # the errors are what the one-step estimates get wrong about eps and x0
    torch.testing.assert_close(e_noise, flow.to_noise_end(x_t, s, v_pred) - eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(e_video, flow.to_data_end(x_t, s, v_pred) - x0, atol=1e-5, rtol=0)


def test_one_step_errors_signs():
    # v points from data to noise; a prediction that overshoots towards noise (dv > 0)
    # puts the noise-end estimate further out and pulls the data-end estimate back
    x_t = torch.zeros(1, *SHAPE)
    v_star = torch.ones(1, *SHAPE)
    e_noise, e_video = one_step_errors(x_t, 0.4, v_star + 0.5, v_star)
    assert (e_noise > 0).all() and (e_video < 0).all()
    torch.testing.assert_close(e_noise, torch.full_like(x_t, 0.6 * 0.5))
    torch.testing.assert_close(e_video, torch.full_like(x_t, -0.4 * 0.5))


def test_one_step_errors_carry_no_grad():
    x_t = torch.randn(2, *SHAPE)
    v_pred = torch.randn(2, *SHAPE, requires_grad=True)
    e_noise, e_video = one_step_errors(
        x_t, torch.tensor([0.2, 0.7]), v_pred, torch.randn(2, *SHAPE)
    )
    for e in (e_noise, e_video):
        assert e.grad_fn is None and not e.requires_grad


def test_one_step_errors_small_dv_is_not_lost_in_bf16_inputs():
    x_t = torch.full((1, *SHAPE), 3.0, dtype=torch.bfloat16)
    v_star = torch.ones(1, *SHAPE)
    v_pred = v_star + 1e-3
    e_noise, e_video = one_step_errors(x_t, 0.5, v_pred, v_star)
    assert e_noise.dtype == torch.float32
    torch.testing.assert_close(e_noise, torch.full((1, *SHAPE), 0.5e-3), atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(e_video, torch.full((1, *SHAPE), -0.5e-3), atol=1e-7, rtol=1e-4)


@FAST
@given(
    sigmas=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
    dims=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 2**16),
)
def test_one_step_errors_property(sigmas, dims, seed):
    g = torch.Generator().manual_seed(seed)
    b = len(sigmas)
    s = torch.tensor(sigmas)
    x_t, v_pred, v_tgt = (torch.randn(b, *dims, generator=g) for _ in range(3))
    e_noise, e_video = one_step_errors(x_t, s, v_pred, v_tgt)
    sb = s.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(e_noise, (1 - sb) * (v_pred - v_tgt))
    torch.testing.assert_close(e_video, -sb * (v_pred - v_tgt))
    # the two errors always differ by exactly dv: e_noise - e_video = dv
    torch.testing.assert_close(e_noise - e_video, v_pred - v_tgt)


# -- binning -------------------------------------------------------------------------
def test_bins_are_the_inference_sigmas():
    cfg = ErftConfig(num_bins=50)
    noise_bank, video_bank = make_banks(cfg, 5.0, seed=0)
    expected = flow.inference_sigmas(50, 5.0)[:-1]
    for bank in (noise_bank, video_bank):
        assert bank.num_bins == 50
        assert torch.equal(bank.bin_sigmas, expected)
        assert bank.capacity == cfg.capacity and bank.replacement == cfg.replacement
    assert float(expected[0]) == 1.0 and float(expected[-1]) > 0


@FAST
@given(s=st.floats(0.0, 1.0))
def test_bin_of_is_the_nearest_bin(s):
    bank = ErrorBank(flow.inference_sigmas(50, 5.0)[:-1])
    expected = int((bank.bin_sigmas - torch.tensor(s)).abs().argmin())
    assert int(bank.bin_of(s)) == expected
    assert int(bank.bin_of(torch.tensor([s, s]))[1]) == expected


def test_bin_of_low_sigmas_go_to_the_last_bin_and_batches_work():
    bins = flow.inference_sigmas(20, 5.0)[:-1]
    bank = ErrorBank(bins)
    last = bank.num_bins - 1
    for s in (0.0, float(bins[-1]) / 2, float(bins[-1]), 1e-6):
        assert int(bank.bin_of(s)) == last
    got = bank.bin_of(bins.view(4, 5))
    assert got.shape == (4, 5) and torch.equal(got.flatten(), torch.arange(20))
    # above the midpoint of the last two bins -> second to last
    mid = float(bins[-1] + bins[-2]) / 2
    assert int(bank.bin_of(mid + 1e-4)) == last - 1
    assert bank.bin_of(torch.tensor([0.5], dtype=torch.float64)).device.type == "cpu"


# -- replacement ---------------------------------------------------------------------
def _const(value: float, shape=SHAPE) -> Tensor:
    return torch.full(shape, float(value))


def test_l2_replacement_replaces_exactly_the_nearest():
    bank = ErrorBank(torch.tensor([1.0, 0.5]), capacity=4, storage_dtype=torch.float32)
    for i in range(4):
        bank.add(_const(10 * i)[None], 1.0)
    bank.add(_const(-1)[None], 0.5)
    new = _const(20.3)  # nearest to entry 2 (value 20)
    bank.add(new[None], 1.0)
    got = _entries(bank, 0)
    assert torch.equal(got[2], new)
    for i in (0, 1, 3):
        assert torch.equal(got[i], _const(10 * i))
    assert torch.equal(_entries(bank, 1), _const(-1)[None])
    assert [st.count for st in bank.stats()] == [4, 1]


def test_l2_replacement_is_exact_for_near_duplicates():
    # torch.cdist (matrix-product mode beyond 25 rows) picks wrong neighbours here
    g = torch.Generator().manual_seed(0)
    shape = (4, 8, 16, 16)
    base = 10 * torch.randn(shape, generator=g)
    store = base + 1e-3 * torch.randn(40, *shape, generator=g)
    for trial in range(3):
        bank = ErrorBank(torch.tensor([1.0]), capacity=40, storage_dtype=torch.float32)
        bank.add(store, 1.0)
        target = 7 + 11 * trial
        new = store[target] + 1e-4 * torch.randn(shape, generator=g)
        bank.add(new[None], 1.0)
        got = _entries(bank, 0)
        changed = [i for i in range(40) if not torch.equal(got[i], store[i])]
        assert changed == [target]


def test_random_replacement_replaces_one_random_entry():
    replaced = set()
    bank = ErrorBank(torch.tensor([1.0]), capacity=4, replacement="random",
                     storage_dtype=torch.float32, seed=3)  # fmt: skip
    for i in range(4):
        bank.add(_const(i)[None], 1.0)
    for step in range(20):
        before = _entries(bank, 0)
        new = _const(100 + step)
        bank.add(new[None], 1.0)
        after = _entries(bank, 0)
        changed = [i for i in range(4) if not torch.equal(before[i], after[i])]
        assert len(changed) == 1 and torch.equal(after[changed[0]], new)
        replaced.add(changed[0])
    assert len(replaced) > 1  # not always the same slot
    assert len(bank) == 4


def test_fifo_replacement_replaces_the_oldest_in_order():
    bank = ErrorBank(torch.tensor([1.0]), capacity=3, replacement="fifo",
                     storage_dtype=torch.float32)  # fmt: skip
    for v in range(3):
        bank.add(_const(v)[None], 1.0)
    expected = [[3, 1, 2], [3, 4, 2], [3, 4, 5], [6, 4, 5]]
    for v, want in zip(range(3, 7), expected, strict=True):
        bank.add(_const(v)[None], 1.0)
        got = [float(e[0, 0, 0, 0]) for e in _entries(bank, 0)]
        assert got == want


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        ErrorBank(torch.tensor([1.0]), replacement="lru")
    with pytest.raises(ValueError):
        ErrorBank(torch.tensor([1.0]), capacity=0)
    bank = ErrorBank(torch.tensor([1.0]))
    bank.add(torch.zeros(1, *SHAPE), 1.0)
    with pytest.raises(ValueError):
        bank.add(torch.zeros(1, 3, 3), 1.0)


# -- sampling ------------------------------------------------------------------------
def test_sample_returns_none_when_empty_and_only_entries_of_the_bin():
    bins = torch.tensor([1.0, 0.5, 0.1])
    bank = ErrorBank(bins, storage_dtype=torch.float32)
    assert bank.sample(0.5) is None and bank.sample_pooled() is None and len(bank) == 0
    for i in range(5):
        bank.add(_const(100 + i)[None], 0.5)
    bank.add(_const(-7)[None], 0.1)
    assert bank.sample(1.0) is None  # that bin is empty
    seen = set()
    for _ in range(40):
        e = bank.sample(0.52)
        assert e is not None and e.shape == SHAPE and e.dtype == torch.float32
        assert _matches_one(e, _entries(bank, 1), atol=0)
        seen.add(float(e[0, 0, 0, 0]))
    assert seen == {100.0, 101.0, 102.0, 103.0, 104.0}
    assert torch.equal(bank.sample(0.0), _const(-7))


def test_sample_pooled_is_uniform_over_entries():
    bins = torch.tensor([1.0, 0.5, 0.1])
    bank = ErrorBank(bins, capacity=100, storage_dtype=torch.float32, seed=123)
    bank.add(torch.stack([_const(i) for i in range(30)]), 1.0)  # bin 0: 30 entries
    bank.add(torch.stack([_const(100 + i) for i in range(10)]), 0.5)  # bin 1: 10
    draws = 4000
    values = [int(bank.sample_pooled()[0, 0, 0, 0]) for _ in range(draws)]
    from_bin0 = sum(v < 100 for v in values)
    p = 30 / 40
    assert abs(from_bin0 - draws * p) < 4 * math.sqrt(draws * p * (1 - p))
    assert 2.5 < from_bin0 / (draws - from_bin0) < 3.6  # ~3x as often
    # every entry ~ draws / 40: chi-square with 39 dof (mean 39, sd 8.8)
    counts = torch.bincount(torch.tensor([v if v < 100 else v - 70 for v in values]), minlength=40)
    assert counts.numel() == 40 and (counts > 0).all()
    expected = draws / 40
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 39 + 5 * 8.83


def test_bf16_storage_round_trip_and_samples_are_copies():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(1, *SHAPE, generator=g)
    bank = ErrorBank(torch.tensor([1.0]))  # bf16 default
    bank.add(e, 1.0)
    assert bank.state_dict()["bin.0"].dtype == torch.bfloat16
    got = bank.sample(1.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, e[0], rtol=2**-8, atol=1e-30)
    # fp32 storage: exact, and a sample is a copy (mutating it leaves the bank alone)
    bank32 = ErrorBank(torch.tensor([1.0]), storage_dtype=torch.float32)
    bank32.add(e, 1.0)
    got = bank32.sample(1.0)
    assert torch.equal(got, e[0])
    got.zero_()
    assert torch.equal(bank32.sample(1.0), e[0])
    # the bank keeps no reference to the caller's tensor either
    e.zero_()
    assert not torch.equal(bank32.sample(1.0), e[0])


def test_spatial_pool_stores_pooled_and_returns_full_shape():
    bank = ErrorBank(torch.tensor([1.0]), spatial_pool=2, storage_dtype=torch.float32)
    blocks = torch.randn(1, *SHAPE[:2], 2, 2)
    e = blocks.repeat_interleave(2, -2).repeat_interleave(2, -1)  # constant 2x2 blocks
    bank.add(e, 1.0)
    assert bank.state_dict()["bin.0"].shape == (1, math.prod(SHAPE) // 4)
    got = bank.sample(1.0)
    assert got.shape == SHAPE
    torch.testing.assert_close(got, e[0])
    # a general error comes back as its 2x2 average, expanded
    g = torch.randn(1, *SHAPE)
    bank2 = ErrorBank(torch.tensor([1.0]), spatial_pool=2, storage_dtype=torch.float32)
    bank2.add(g, 1.0)
    pooled = torch.nn.functional.avg_pool2d(g.reshape(-1, 1, 4, 4), 2).reshape(*SHAPE[:2], 2, 2)
    torch.testing.assert_close(
        bank2.sample(1.0), pooled.repeat_interleave(2, -2).repeat_interleave(2, -1)
    )
    with pytest.raises(ValueError):
        ErrorBank(torch.tensor([1.0]), spatial_pool=3).add(torch.zeros(1, *SHAPE), 1.0)


def test_max_bytes_caps_capacity_and_nbytes_grows():
    bins = torch.tensor([1.0, 0.7, 0.4, 0.1])
    entry = math.prod(SHAPE) * 2  # bf16
    bank = ErrorBank(bins, capacity=500, max_bytes=len(bins) * entry * 3)
    assert bank.nbytes == 0
    sizes = []
    for _ in range(10):
        bank.add(torch.randn(1, *SHAPE), 1.0)
        sizes.append(bank.nbytes)
    assert bank.capacity == 3 and bank.stats()[0].count == 3 and len(bank) == 3
    assert sizes[0] > 0 and sizes == sorted(sizes)
    assert bank.nbytes <= len(bins) * bank.capacity * bank.entry_bytes()
    assert bank.entry_bytes() == entry
    with pytest.raises(ValueError):
        ErrorBank(bins, max_bytes=entry).add(torch.zeros(1, *SHAPE), 1.0)
    small, _ = make_banks(ErftConfig(num_bins=4, capacity=500), 5.0, 0, max_bytes=4 * entry * 2)
    small.add(torch.zeros(1, *SHAPE), 1.0)
    assert small.capacity == 2
    unbounded = ErrorBank(bins, capacity=50)
    grown = []
    for _ in range(6):
        unbounded.add(torch.randn(2, *SHAPE), torch.tensor([1.0, 0.1]))
        grown.append(unbounded.nbytes)
    assert grown == sorted(grown) and grown[-1] > grown[0]


def test_stats_counts_and_norms():
    bank = ErrorBank(torch.tensor([1.0, 0.5]), storage_dtype=torch.float32)
    bank.add(torch.stack([_const(2), _const(2)]), torch.tensor([1.0, 0.9]))
    stats = bank.stats()
    assert [s.count for s in stats] == [2, 0]
    assert stats[0].sigma == 1.0 and stats[0].mean_norm == pytest.approx(2.0)
    assert stats[1].mean_norm == 0.0


# -- checkpointing -------------------------------------------------------------------
def _busy_bank(seed: int) -> ErrorBank:
    g = torch.Generator().manual_seed(5)
    bank = ErrorBank(torch.tensor([1.0, 0.6, 0.3, 0.05]), capacity=6, replacement="random",
                     seed=seed)  # fmt: skip
    for _ in range(5):
        bank.add(torch.randn(4, *SHAPE, generator=g), torch.rand(4, generator=g))
    for _ in range(7):
        bank.sample(0.6)
    return bank


def _draws(bank: ErrorBank, n: int = 25) -> list[Tensor | None]:
    out = []
    for i in range(n):
        out.append(bank.sample_pooled() if i % 3 == 0 else bank.sample([1.0, 0.6, 0.3][i % 3]))
    bank.add(torch.full((2, *SHAPE), 9.0), torch.tensor([0.6, 0.05]))  # random replacement
    out.extend(bank.sample(0.6) for _ in range(5))
    return out


def _same_draws(a: list[Tensor | None], b: list[Tensor | None]) -> bool:
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("through_file", [False, True])
def test_state_dict_round_trip_restores_contents_and_rng(tmp_path, through_file):
    bank = _busy_bank(seed=11)
    sd = bank.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    if through_file:
        save_file(sd, tmp_path / "bank.safetensors")
        sd = load_file(tmp_path / "bank.safetensors")
    restored = ErrorBank(torch.tensor([1.0, 0.6, 0.3, 0.05]), capacity=6, replacement="random",
                         seed=999)  # fmt: skip
    restored.load_state_dict(sd)
    assert restored.stats() == bank.stats() and len(restored) == len(bank)
    assert restored.shape == bank.shape and restored.capacity == bank.capacity
    assert _same_draws(_draws(bank), _draws(restored))
    assert restored.stats() == bank.stats()


def test_state_dict_of_empty_bank_and_bin_mismatch(tmp_path):
    bank = ErrorBank(torch.tensor([1.0, 0.5]))
    save_file(bank.state_dict(), tmp_path / "empty.safetensors")
    other = ErrorBank(torch.tensor([1.0, 0.5]))
    other.load_state_dict(load_file(tmp_path / "empty.safetensors"))
    assert len(other) == 0 and other.shape is None and other.sample_pooled() is None
    other.add(torch.zeros(1, *SHAPE), 0.5)
    assert other.stats()[1].count == 1
    with pytest.raises(ValueError):
        ErrorBank(torch.tensor([1.0, 0.4])).load_state_dict(bank.state_dict())


def test_sample_pooled_below_a_sigma_draws_only_those_bins():
    bins = torch.tensor([1.0, 0.5, 0.1])
    bank = ErrorBank(bins, capacity=100, storage_dtype=torch.float32, seed=5)
    for b, sigma in enumerate(bins):
        bank.add(torch.stack([_const(100 * b + i) for i in range(4)]), sigma)
    low = {int(bank.sample_pooled(0.5)[0, 0, 0, 0]) // 100 for _ in range(200)}
    assert low == {1, 2}
    assert {int(bank.sample_pooled(0.2)[0, 0, 0, 0]) // 100 for _ in range(50)} == {2}
    assert bank.sample_pooled(0.05) is None
    # no limit (or one above every bin) draws exactly what the unrestricted call draws
    a, b = ErrorBank(bins, seed=9), ErrorBank(bins, seed=9)
    for bank_ in (a, b):
        bank_.add(torch.stack([_const(i) for i in range(6)]), torch.tensor([1.0, 0.5, 0.1] * 2))
    assert all(torch.equal(a.sample_pooled(), b.sample_pooled(1.0)) for _ in range(20))


def test_bin_shift_sets_the_bin_grid():
    _, video_bank = make_banks(ErftConfig(num_bins=20, bin_shift=3.0), 20.0, seed=0)
    assert torch.equal(video_bank.bin_sigmas, flow.inference_sigmas(20, 3.0)[:-1])
    default, _ = make_banks(ErftConfig(num_bins=20), 20.0, seed=0)
    assert torch.equal(default.bin_sigmas, flow.inference_sigmas(20, 20.0)[:-1])
    assert float(video_bank.bin_sigmas[-1]) < float(default.bin_sigmas[-1])


@pytest.mark.parametrize("bad", [{"bin_shift": 0.0}, {"bin_shift": float("nan")},
                                 {"image_sigma_max": 0.0}, {"image_sigma_max": 1.5},
                                 {"image_sigma_max": float("nan")}])  # fmt: skip
def test_bad_bin_settings_are_refused(bad):
    with pytest.raises(SviError, match=next(iter(bad))):
        ErftConfig(**bad)


# -- injection -----------------------------------------------------------------------
NUM_BINS = 10


def _filled_banks(cfg: ErftConfig, seed: int = 0, fill: bool = True):
    """Float32 banks whose entries identify their bin: entry i of bin b ~ 100 b + i + noise."""
    noise_bank, video_bank = make_banks(cfg, 5.0, seed=seed, storage_dtype=torch.float32)
    if fill:
        g = torch.Generator().manual_seed(42)
        bins = noise_bank.bin_sigmas
        for bank, sign in ((noise_bank, 1.0), (video_bank, -1.0)):
            for b in range(len(bins)):
                errs = torch.stack([sign * (_const(100 * b + i) + torch.randn(SHAPE, generator=g))
                                    for i in range(3)])  # fmt: skip
                bank.add(errs, bins[b])
    return noise_bank, video_bank


def _batch(b: int = 6, seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, *SHAPE, generator=g)
    noise = torch.randn(b, *SHAPE, generator=g)
    y = torch.randn(b, 4 + C, *SHAPE[1:], generator=g)
    sigma = flow.sample_training_sigmas(b, g)
    return x0, noise, y, sigma


def _injector(seed: int = 0, fill: bool = True, **kw) -> ErrorInjector:
    cfg = ErftConfig(num_bins=NUM_BINS, capacity=8, **kw)
    noise_bank, video_bank = _filled_banks(cfg, fill=fill)
    return ErrorInjector(cfg, noise_bank, video_bank, torch.Generator().manual_seed(seed))


ONLY = {"p_noise": 0.0, "p_video": 0.0, "p_image": 0.0, "p_clean": 0.0}


def _inject_unmutated(inj: ErrorInjector, *args) -> Injection:
    copies = [a.clone() for a in args]
    out = inj.inject(*args)
    for a, c in zip(args, copies, strict=True):
        assert torch.equal(a, c)  # inputs untouched
    return out


def test_image_error_touches_only_the_first_k_latent_frames():
    inj = _injector(**{**ONLY, "p_image": 1.0, "image_error_frames": 3})
    x0, noise, y, sigma = _batch(b=24)
    out = _inject_unmutated(inj, x0, noise, y, sigma)
    k = 3
    assert torch.equal(out.y[:, :4], y[:, :4])  # mask channels bit-identical
    assert torch.equal(out.y[:, 4:, k:], y[:, 4:, k:])  # later latent frames too
    assert torch.equal(out.noise, noise) and torch.equal(out.x0_in, x0)
    assert torch.equal(out.target, noise - x0)
    assert out.used["image"].all() and not out.used["noise"].any() and not out.used["video"].any()
    assert not out.clean.any() and out.bank.all()
    pool = _all_entries(inj.video_bank)
    delta = out.y[:, 4:, :k] - y[:, 4:, :k]
    for b in range(24):
        j = int(out.image_offset[b])
        assert 0 <= j <= F - k
        assert _matches_one(delta[b], pool[:, :, j : j + k], atol=1e-4)
    assert set(out.image_offset.tolist()) == {0, 1, 2}  # the window moves
    assert set(out.rates()) == {"clean", "bank", "noise", "video", "image"}


def test_image_window_longer_than_the_clip_uses_all_frames():
    inj = _injector(**{**ONLY, "p_image": 1.0, "image_error_frames": 8})
    x0, noise, y, sigma = _batch(b=4)
    out = inj.inject(x0, noise, y, sigma)
    assert (out.image_offset == 0).all()
    pool = _all_entries(inj.video_bank)
    for b in range(4):
        assert _matches_one(out.y[b, 4:] - y[b, 4:], pool, atol=1e-4)
    assert torch.equal(out.y[:, :4], y[:, :4])


def test_video_error_comes_from_the_bin_and_target_keeps_clean_x0():
    inj = _injector(**{**ONLY, "p_video": 1.0})
    x0, noise, y, sigma = _batch(b=8)
    out = _inject_unmutated(inj, x0, noise, y, sigma)
    assert torch.equal(out.noise, noise) and torch.equal(out.y, y)
    assert out.used["video"].all() and (out.image_offset == -1).all()
    for b in range(8):
        own_bin = int(inj.video_bank.bin_of(sigma[b]))
        assert _matches_one(out.x0_in[b] - x0[b], _entries(inj.video_bank, own_bin), atol=1e-4)
    assert torch.equal(out.target, out.noise - x0)  # v* = eps~ - x0 (clean)
    assert not torch.allclose(out.target, out.noise - out.x0_in)


def test_noise_error_comes_from_the_noise_bank_bin():
    inj = _injector(**{**ONLY, "p_noise": 1.0})
    x0, noise, y, sigma = _batch(b=8)
    out = _inject_unmutated(inj, x0, noise, y, sigma)
    assert torch.equal(out.x0_in, x0) and torch.equal(out.y, y)
    assert out.used["noise"].all()
    for b in range(8):
        own_bin = int(inj.noise_bank.bin_of(sigma[b]))
        assert _matches_one(out.noise[b] - noise[b], _entries(inj.noise_bank, own_bin), atol=1e-4)
    assert torch.equal(out.target, out.noise - x0)


def test_clean_steps_inject_nothing_and_bank_with_clean_bank_prob():
    inj = _injector(p_noise=1.0, p_video=1.0, p_image=1.0, p_clean=1.0, clean_bank_prob=0.1)
    n = 4000
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(n, 1, 1, 1, 1, generator=g), torch.randn(n, 1, 1, 1, 1, generator=g)
    y = torch.randn(n, 5, 1, 1, 1, generator=g)
    out = inj.inject(x0, noise, y, 0.5)
    assert out.clean.all() and not any(u.any() for u in out.used.values())
    assert torch.equal(out.noise, noise) and torch.equal(out.x0_in, x0) and torch.equal(out.y, y)
    rate = 0.1
    banked = int(out.bank.sum())
    assert abs(banked - n * rate) < 3 * math.sqrt(n * rate * (1 - rate))


def test_coin_rates():
    cfg = {"p_noise": 0.3, "p_video": 0.6, "p_image": 0.9, "p_clean": 0.2}
    inj = _injector(**cfg)
    n = 1500
    x0, noise, y, sigma = _batch(b=n, seed=1)
    out = inj.inject(x0, noise, y, sigma)
    flags = {"clean": out.clean, **out.used}
    expected = {"clean": 0.2, "noise": 0.8 * 0.3, "video": 0.8 * 0.6, "image": 0.8 * 0.9}
    for term, p in expected.items():
        got = float(flags[term].float().mean())
        assert abs(got - p) < 4 * math.sqrt(p * (1 - p) / n), term
    for u in out.used.values():
        assert not (u & out.clean).any()
    assert torch.equal(out.bank | out.clean, torch.ones(n, dtype=torch.bool))


def test_error_scale_scales_every_injected_error():
    all_on = {"p_noise": 1.0, "p_video": 1.0, "p_image": 1.0, "p_clean": 0.0}
    x0, noise, y, sigma = _batch(b=5)
    one = _injector(seed=4, error_scale=1.0, **all_on).inject(x0, noise, y, sigma)
    scaled = _injector(seed=4, error_scale=2.5, **all_on).inject(x0, noise, y, sigma)
    assert torch.equal(one.image_offset, scaled.image_offset)
    for a, b, ref in ((one.noise, scaled.noise, noise), (one.x0_in, scaled.x0_in, x0),
                      (one.y, scaled.y, y)):  # fmt: skip
        torch.testing.assert_close(b - ref, 2.5 * (a - ref), atol=1e-4, rtol=1e-5)
    assert all(u.all() for u in scaled.used.values())


def test_image_errors_come_only_from_low_sigma_bins():
    inj = _injector(seed=2, **{**ONLY, "p_image": 1.0, "image_sigma_max": 0.6})
    low = inj.video_bank.bin_sigmas <= 0.6
    allowed = set(torch.nonzero(low).flatten().tolist())
    assert allowed and len(allowed) < NUM_BINS
    x0, noise, y, sigma = _batch(b=8)
    out = inj.inject(x0, noise, y, sigma)
    k = inj.config.image_error_frames
    for b in range(8):
        j = int(out.image_offset[b])
        added = out.y[b, 4:, :k] - y[b, 4:, :k]  # = -(100 bin + i + noise) frames j..j+k
        level = -float(added.mean())
        assert j >= 0 and round(level / 100) in allowed, level


def test_rollout_error_of_the_exact_velocity_is_zero():
    from svi.erft.rollout import rollout_error

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, *SHAPE, generator=g)
    y = torch.randn(2, 4 + C, *SHAPE[1:], generator=g)

    def exact(x, sigma, y_, text):  # the flow towards x0 alone: Euler lands on it exactly
        return (x - x0) / sigma.view(-1, 1, 1, 1, 1)

    err = rollout_error(exact, x0, y, torch.zeros(2, 3, 8), None, steps=4, shift=3.0, cfg=1.0,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert err.shape == x0.shape and float(err.abs().max()) < 1e-5

    def biased(x, sigma, y_, text):
        return exact(x, sigma, y_, text) - 0.5 / sigma.view(-1, 1, 1, 1, 1)

    err = rollout_error(biased, x0, y, torch.zeros(2, 3, 8), None, steps=4, shift=3.0, cfg=1.0,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    torch.testing.assert_close(err, torch.full_like(err, 0.5))  # the last step's -0.5/s * -s


def test_rollout_image_errors_come_from_the_rollout_bank():
    cfg = ErftConfig(num_bins=NUM_BINS, capacity=8, image_errors="rollout",
                     **{**ONLY, "p_image": 1.0})  # fmt: skip
    noise_bank, video_bank = _filled_banks(cfg)
    with pytest.raises(SviError, match="needs the rollout error bank"):
        ErrorInjector(cfg, noise_bank, video_bank, torch.Generator())
    image_bank = ErrorBank(torch.zeros(1), capacity=4, storage_dtype=torch.float32)
    image_bank.add(torch.stack([_const(7000)]), 0.0)
    inj = ErrorInjector(cfg, noise_bank, video_bank, torch.Generator().manual_seed(3), image_bank)
    x0, noise, y, sigma = _batch(b=3)
    out = inj.inject(x0, noise, y, sigma)
    k = cfg.image_error_frames
    torch.testing.assert_close(
        out.y[:, 4:, :k] - y[:, 4:, :k], torch.full_like(y[:, 4:, :k], 7000.0)
    )
    assert out.used["image"].all()


@pytest.mark.parametrize("bad", [{"image_errors": "dream"}, {"rollout_every": 0},
                                 {"rollout_steps": 1.5}])  # fmt: skip
def test_bad_rollout_settings_are_refused(bad):
    with pytest.raises(SviError, match=next(iter(bad))):
        ErftConfig(**bad)


def test_image_sigma_max_below_every_bin_is_an_error():
    cfg = ErftConfig(num_bins=NUM_BINS, capacity=8, image_sigma_max=0.001)
    noise_bank, video_bank = _filled_banks(cfg)
    with pytest.raises(SviError, match="below every bin"):
        ErrorInjector(cfg, noise_bank, video_bank, torch.Generator())


def test_empty_banks_mean_no_injection():
    inj = _injector(fill=False, p_noise=1.0, p_video=1.0, p_image=1.0, p_clean=0.0)
    x0, noise, y, sigma = _batch(b=4)
    out = _inject_unmutated(inj, x0, noise, y, sigma)
    assert not any(u.any() for u in out.used.values())
    assert torch.equal(out.noise, noise) and torch.equal(out.x0_in, x0) and torch.equal(out.y, y)
    assert out.bank.all() and not out.clean.any()
    assert out.noise is not noise and out.x0_in is not x0 and out.y is not y  # new tensors


def test_empty_bin_turns_off_only_that_term():
    cfg = ErftConfig(num_bins=NUM_BINS, p_noise=1.0, p_video=1.0, p_image=1.0, p_clean=0.0)
    noise_bank, video_bank = make_banks(cfg, 5.0, seed=0, storage_dtype=torch.float32)
    video_bank.add(torch.ones(1, *SHAPE), 1.0)  # only the first bin holds an error
    inj = ErrorInjector(cfg, noise_bank, video_bank, torch.Generator().manual_seed(0))
    x0, noise, y, _ = _batch(b=2)
    out = inj.inject(x0, noise, y, torch.tensor([1.0, 0.05]))
    assert out.used["video"].tolist() == [True, False]
    assert out.used["image"].tolist() == [True, True]  # pooled over all bins
    assert out.used["noise"].tolist() == [False, False]
    assert torch.equal(out.x0_in[1], x0[1])


def test_injection_is_reproducible():
    x0, noise, y, sigma = _batch(b=6)
    kw = {"p_noise": 0.5, "p_video": 0.5, "p_image": 0.5, "p_clean": 0.3}
    a = _injector(seed=9, **kw).inject(x0, noise, y, sigma)
    b = _injector(seed=9, **kw).inject(x0, noise, y, sigma)
    for field in ("noise", "x0_in", "y", "target", "clean", "bank", "image_offset"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert all(torch.equal(a.used[t], b.used[t]) for t in a.used)
    c = _injector(seed=10, **kw).inject(x0, noise, y, sigma)
    assert not torch.equal(torch.stack([a.clean, a.bank]), torch.stack([c.clean, c.bank])) or (
        not torch.equal(a.y, c.y)
    )


def test_inject_rejects_bad_shapes_and_config():
    inj = _injector()
    x0, noise, y, sigma = _batch(b=2)
    with pytest.raises(ValueError):
        inj.inject(x0, noise, y[:, 1:], sigma)  # 3 mask channels
    with pytest.raises(ValueError):
        inj.inject(x0, noise[:1], y, sigma)
    with pytest.raises(ValueError):
        inj.inject(x0, noise, y, torch.rand(3))
    with pytest.raises(ValueError):
        ErrorInjector(ErftConfig(p_video=1.5), inj.noise_bank, inj.video_bank, torch.Generator())


# -- banking -------------------------------------------------------------------------
def test_errors_then_add_fill_the_right_bins():
    inj = _injector(fill=False, p_noise=1.0, p_video=1.0, p_image=1.0, p_clean=0.0)
    x0, noise, y, _ = _batch(b=6)
    bins = inj.noise_bank.bin_sigmas
    sigma = torch.stack([bins[2], bins[2], bins[5], bins[0], bins[9], bins[9] * 0.5])
    out = inj.inject(x0, noise, y, sigma)
    x_t = flow.interpolate(out.x0_in, out.noise, sigma)
    dv = 0.1 * torch.randn_like(x_t)
    assert inj.add(*inj.errors(out, x_t, sigma, out.target + dv)) == 6
    expected = [0] * NUM_BINS
    for b in (2, 2, 5, 0, 9, 9):
        expected[b] += 1
    for bank in (inj.noise_bank, inj.video_bank):
        assert [s.count for s in bank.stats()] == expected
    # bin 5 holds exactly the one error made at sigma = bins[5]
    s5 = bins[5]
    torch.testing.assert_close(_entries(inj.noise_bank, 5)[0], (1 - s5) * dv[2], atol=1e-6, rtol=0)
    torch.testing.assert_close(_entries(inj.video_bank, 5)[0], -s5 * dv[2], atol=1e-6, rtol=0)


def test_errors_then_add_respect_the_bank_mask():
    inj = _injector(fill=False, p_clean=1.0, clean_bank_prob=0.5, seed=2)
    x0, noise, y, sigma = _batch(b=16)
    out = inj.inject(x0, noise, y, sigma)
    x_t = flow.interpolate(out.x0_in, out.noise, sigma)
    n = int(out.bank.sum())
    assert 0 < n < 16
    assert inj.add(*inj.errors(out, x_t, sigma, torch.randn_like(x_t))) == n
    assert len(inj.noise_bank) == n and len(inj.video_bank) == n
    none = _injector(fill=False, p_clean=1.0, clean_bank_prob=0.0)
    out = none.inject(x0, noise, y, sigma)
    assert none.add(*none.errors(out, x_t, sigma, torch.randn_like(x_t))) == 0
    assert len(none.noise_bank) == 0
