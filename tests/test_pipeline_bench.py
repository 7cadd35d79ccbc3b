"""Smoke run of benchmarks/pipeline_bench.py's measurements at minimal sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from svi.pipeline import SVIPipeline
from svi.starts import world_start
from world_fixtures import build_tiny_world_model

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "pipeline_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pipeline_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("bench") / "tiny")


def test_world_measurements(bench, model: Path, tmp_path: Path) -> None:
    pipe = SVIPipeline.from_pretrained(model)
    start, prompts = world_start(pipe.bundle.preset)
    overhead = bench.measure_overhead(pipe, start, prompts[0], clips=2)
    assert overhead["identical_output"]  # the bare sampler did exactly the clip's work
    assert len(overhead["ratios"]) == 2 and overhead["ratio_median"] > 0
    realtime = bench.measure_realtime(pipe, clips=2, repeats=1, tmp=tmp_path)
    assert realtime["frames_written"] == 2 * 3 + 2 and realtime["ratio"] > 0
    memory = bench.memory_child(model, clips=2, steps=1, out_dir=tmp_path)
    assert memory["frames_written"] == 8 and memory["peak_rss_mib"] > 0
    table = bench.markdown_table({"overhead": overhead, "realtime": realtime})
    assert table.count("\n") == 3


def test_wan_measurements(bench, tmp_path: Path) -> None:
    wan = {"size": 32, "frames": 5, "steps": 2, "cfg": 5.0, "clips": 2, "repeats": 1}
    _, ours, naive = bench.build_wan(tmp_path, wan["size"], wan["frames"], wan["steps"])
    image = _checker(wan["size"])
    result = bench.measure_wan(ours, naive, image, wan)
    assert result["frames_per_generation"]["naive"] == 2 * 4 + 1
    assert result["frames_per_generation"]["ours"] == 2 * 4  # the tail is held back
    assert result["ratio_median"] > 0 and result["latent_ratio_median"] > 0
    profile = bench.profile_wan(ours, naive, image, wan)
    assert profile["naive"]["dit"]["calls_per_clip"] == 2 * wan["steps"]  # cond + uncond
    assert profile["ours"]["dit"]["calls_per_clip"] == wan["steps"]  # batched CFG
    assert "| total |" in bench.profile_table(profile)


def _checker(size: int) -> np.ndarray:
    """A grey checkerboard start frame (size, size, 3) uint8."""
    idx = np.indices((size, size)).sum(axis=0) // 4 % 2
    return np.repeat((60 + 150 * idx).astype(np.uint8)[..., None], 3, axis=2)
