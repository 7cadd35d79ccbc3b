"""Smoke run of benchmarks/pipeline_bench.py's measurements at minimal sizes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark_scripts import load_benchmark
from svi.pipeline import SVIPipeline
from svi.starts import world_start
from world_fixtures import build_tiny_world_model


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("pipeline_bench")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("bench") / "tiny")


def test_world_measurements(bench, model: Path, tmp_path: Path, monkeypatch) -> None:
    """The real work runs; the clock is scripted, so every reported figure is known."""
    pipe = SVIPipeline.from_pretrained(model)
    start, prompts = world_start(pipe.bundle.preset)
    real_timed = bench.timed
    # seconds per timed call, per side, in clip order; clip 0 is the uncounted warm-up
    clock = {"generate": [9.0, 3.0, 5.0], "sampler": [1.0, 2.0, 4.0]}

    def scripted(fn):
        _, out = real_timed(fn)
        side = "sampler" if isinstance(out, torch.Tensor) else "generate"  # latents vs a Clip
        return clock[side].pop(0), out

    monkeypatch.setattr(bench, "timed", scripted)
    overhead = bench.measure_overhead(pipe, start, prompts[0], clips=2)
    assert overhead["identical_output"]  # the bare sampler did exactly the clip's work
    assert clock == {"generate": [], "sampler": []}  # each side timed once per clip
    assert overhead["ratios"] == pytest.approx([3 / 2, 5 / 4])  # generate / sampler per clip
    assert overhead["ratio_median"] == pytest.approx(1.375)
    assert overhead["generate_s_median"] == 4.0 and overhead["sampler_s_median"] == 3.0
    assert overhead["ratio_of_medians"] == pytest.approx(4 / 3)

    walls = [2.0]  # one repeat of 2 clips, 8 frames, in 2 s: 4 frames/s, half of 8 fps
    monkeypatch.setattr(bench, "timed", lambda fn: (walls.pop(0), fn()))
    realtime = bench.measure_realtime(pipe, clips=2, repeats=1, tmp=tmp_path)
    assert realtime["frames_written"] == 2 * 3 + 2 and realtime["playback_fps"] == 8
    assert realtime["fps_runs"] == [4.0] and realtime["fps_median"] == 4.0
    assert realtime["ratio"] == pytest.approx(0.5) and walls == []
    monkeypatch.setattr(bench, "timed", real_timed)

    memory = bench.memory_child(model, clips=2, steps=1, out_dir=tmp_path)
    assert memory["frames_written"] == 8
    # the peak (getrusage) is in the same unit as the current RSS (/proc) and not below it
    before, after = memory["rss_before_generation_mib"], memory["rss_after_generation_mib"]
    assert before is not None and after is not None
    assert memory["peak_rss_mib"] >= 0.99 * max(before, after)
    table = bench.markdown_table({"overhead": overhead, "realtime": realtime})
    assert table.splitlines()[2:] == [
        "| pipeline overhead: generate / bare sampler (median per clip) | 1.375 | <= 1.02 | no |",
        "| real time: 4.0 frames/s / 8 fps playback | 0.500 | > 1 | no |",
    ]


def test_wan_measurements(bench, tmp_path: Path, monkeypatch) -> None:
    wan = {"size": 32, "frames": 5, "steps": 2, "cfg": 5.0, "clips": 2, "repeats": 1}
    _, ours, naive = bench.build_wan(tmp_path, wan["size"], wan["frames"], wan["steps"])
    image = _checker(wan["size"])
    # seconds per clip of each contender, in clip order (a scripted clock; the work is real)
    clock = {"ours": [1.0, 3.0], "ours_latent": [1.0, 1.0], "naive": [4.0, 2.0]}
    with monkeypatch.context() as m:
        _script_wan_clock(m, bench, ours, clock)
        result = bench.measure_wan(ours, naive, image, wan)
    assert clock == {"ours": [], "ours_latent": [], "naive": []}  # each clip timed once
    assert result["frames_per_generation"]["naive"] == 2 * 4 + 1
    assert result["frames_per_generation"]["ours"] == 2 * 4  # the tail is held back
    assert result["s_median"] == {"ours": 4.0, "ours_latent": 2.0, "naive": 6.0}
    # per generation: total seconds / the naive loop's total seconds
    assert result["ratios"] == pytest.approx([4 / 6])
    assert result["latent_ratios"] == pytest.approx([2 / 6])
    assert result["ratio_median"] == pytest.approx(4 / 6)
    assert result["latent_ratio_median"] == pytest.approx(2 / 6)
    # per clip: median of (1/4, 3/2) and of (1/4, 1/2)
    assert result["clip_ratio_median"] == pytest.approx({"ours": 0.875, "ours_latent": 0.375})
    profile = bench.profile_wan(ours, naive, image, wan)
    assert profile["naive"]["dit"]["calls_per_clip"] == 2 * wan["steps"]  # cond + uncond
    assert profile["ours"]["dit"]["calls_per_clip"] == wan["steps"]  # batched CFG
    assert "| total |" in bench.profile_table(profile)


def _script_wan_clock(m: pytest.MonkeyPatch, bench, ours, clock: dict[str, list[float]]) -> None:
    """``bench.timed`` answers the next of ``clock[contender]`` for the contender whose
    generator the timed call advanced (the generators are tagged, so the order in which
    measure_wan interleaves the contenders does not matter)."""
    advanced: list[str] = []

    def tagged(name: str, items: Iterator) -> Iterator:
        for item in items:
            advanced.append(name)
            yield item

    real_generate, real_loop, real_timed = ours.generate, bench.naive_loop, bench.timed

    def generate(start, prompts, config, **kwargs):
        name = "ours_latent" if config.handoff == "latent" else "ours"
        return tagged(name, real_generate(start, prompts, config, **kwargs))

    def scripted(fn):
        advanced.clear()
        _, out = real_timed(fn)
        (name,) = advanced
        return clock[name].pop(0), out

    m.setattr(ours, "generate", generate)
    m.setattr(bench, "naive_loop", lambda *a, **k: tagged("naive", real_loop(*a, **k)))
    m.setattr(bench, "timed", scripted)


def _checker(size: int) -> np.ndarray:
    """A grey checkerboard start frame (size, size, 3) uint8."""
    idx = np.indices((size, size)).sum(axis=0) // 4 % 2
    return np.repeat((60 + 150 * idx).astype(np.uint8)[..., None], 3, axis=2)
