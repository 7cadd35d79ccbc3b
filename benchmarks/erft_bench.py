"""ERFT cost: step time with a full error bank vs a plain LoRA step, bank costs, memory.

    python benchmarks/erft_bench.py [--repeats 7] [--quick]

Figures (ratios within one run, medians over repeats; results/erft_bench.json):
1. ERFT step / plain LoRA step on the same world model and batch, bank FULL;
2. bank ``add`` and ``sample`` cost per call, and l2 replacement vs capacity;
3. bytes of a full replay memory at Wan 2.1 480p shapes (16 x 21 x 60 x 104 per error,
   capacity 500, 50 bins, 2 banks) for each storage policy, vs the reference's ~210 GB.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from svi import flow
from svi.clips import WorldClips
from svi.config import ErftConfig, TrainConfig
from svi.erft import ErrorBank, ErrorInjector, make_banks
from svi.lora import add_training_lora
from svi.models.bundle import build_world_transformer
from svi.models.presets import get_preset
from svi.sampling import Experts
from svi.train import make_bundle, prepare_batch

log = logging.getLogger("erft_bench")
WAN_ERROR = (16, 21, 60, 104)


def wan_memory() -> dict[str, float]:
    """GB of 2 banks x 50 bins x 500 errors at Wan 2.1 480p shapes, per storage policy."""
    bins = flow.inference_sigmas(50, 5.0)[:-1]
    out = {}
    for name, kw in {
        "bf16 (reference)": {"storage_dtype": torch.bfloat16},
        "fp32": {"storage_dtype": torch.float32},
        "bf16 + spatial_pool=2": {"storage_dtype": torch.bfloat16, "spatial_pool": 2},
        "bf16 + spatial_pool=4": {"storage_dtype": torch.bfloat16, "spatial_pool": 4},
    }.items():
        bank = ErrorBank(bins, capacity=500, **kw)
        out[name] = 2 * 50 * 500 * bank.entry_bytes(WAN_ERROR) / 1e9
    budget = ErrorBank(bins, capacity=500, max_bytes=16 * 10**9)
    budget._init_shape(WAN_ERROR)
    out[f"bf16, max_bytes=16 GB per bank (capacity {budget.capacity})"] = (
        2 * 50 * budget.capacity * budget.entry_bytes() / 1e9
    )
    return out


def bank_costs(shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Milliseconds per add (filling / replacing) and per sample, by capacity."""
    rows = {}
    for capacity in (10, 50, 200, 500):
        bank = ErrorBank(torch.tensor([1.0]), capacity=capacity, replacement="l2")
        errs = torch.randn(capacity + repeats, *shape)
        t0 = time.perf_counter()
        for e in errs[:capacity]:
            bank.add(e[None], 0.5)
        fill = (time.perf_counter() - t0) / capacity
        t0 = time.perf_counter()
        for e in errs[capacity:]:
            bank.add(e[None], 0.5)
        replace = (time.perf_counter() - t0) / repeats
        t0 = time.perf_counter()
        for _ in range(repeats):
            bank.sample(0.5)
        sample = (time.perf_counter() - t0) / repeats
        rows[f"capacity {capacity}"] = {
            "add_ms": 1e3 * fill,
            "l2_replace_ms": 1e3 * replace,
            "sample_ms": 1e3 * sample,
        }
    return rows


def step_ratio(repeats: int, steps: int) -> dict[str, float]:
    """Median time of an ERFT LoRA step (full bank) over a plain LoRA step, interleaved."""
    preset = get_preset("world-tiny")
    config = TrainConfig(batch_size=8)
    bundle = make_bundle(config)
    model = build_world_transformer(preset)
    model.requires_grad_(False)
    add_training_lora(model, 16, 16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    velocity = Experts(model)
    data = WorldClips(
        ("consistent",), 32, 24, preset.num_frames, preset.height, show_progress=False
    )
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    erft = ErftConfig(num_bins=20, capacity=50)
    banks = make_banks(erft, preset.shift, seed=0)
    injector = ErrorInjector(erft, *banks, gen)
    shape = (3, preset.num_frames, preset.height, preset.width)  # one world error
    for bank in banks:  # fill every bin to capacity
        for b in range(bank.num_bins):
            bank.add(torch.randn(erft.capacity, *shape) * 0.1, float(bank.bin_sigmas[b]))

    def one_step(use_erft: bool) -> float:
        batch = data.sample(config.batch_size, rng, 2)
        x0, y, text = prepare_batch(batch, bundle, config, gen)
        noise = torch.randn(x0.shape, generator=gen)
        sigma = flow.sample_training_sigmas(x0.shape[0], gen, preset.shift)
        t0 = time.perf_counter()
        if use_erft:
            inj = injector.inject(x0, noise, y, sigma)
            x_t, target, y = flow.interpolate(inj.x0_in, inj.noise, sigma), inj.target, inj.y
        else:
            x_t, target = flow.interpolate(x0, noise, sigma), flow.velocity_target(x0, noise)
        v = velocity(x_t, sigma, y, text)
        loss = torch.nn.functional.mse_loss(v, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if use_erft:
            injector.add(*injector.errors(inj, x_t, sigma, v.detach()))
        return time.perf_counter() - t0

    for _ in range(3):  # warm-up
        one_step(False), one_step(True)
    ratios, plain, full = [], [], []
    for _ in range(repeats):
        p = statistics.median(one_step(False) for _ in range(steps))
        e = statistics.median(one_step(True) for _ in range(steps))
        plain.append(p)
        full.append(e)
        ratios.append(e / p)
    return {
        "erft_over_plain_median": statistics.median(ratios),
        "plain_step_ms": 1e3 * statistics.median(plain),
        "erft_step_ms": 1e3 * statistics.median(full),
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/erft_bench.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    repeats = 3 if args.quick else args.repeats
    result = {
        "wan_480p_full_memory_gb": wan_memory(),
        "bank_costs_world_shape": bank_costs((3, 5, 32, 32), 20 if args.quick else 100),
        "step": step_ratio(repeats, 3 if args.quick else 8),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    log.info("%s", json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
