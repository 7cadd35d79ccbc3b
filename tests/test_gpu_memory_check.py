"""benchmarks/gpu_memory_check.py at tiny size on the CPU (the GPU run uses the same code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def check():
    return load_benchmark("gpu_memory_check")


def test_tiny_run_measures_every_mode(check, tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    report = check.main(["--tiny", "--out", str(out), "--steps", "2"])
    assert json.loads(out.read_text()) == report
    (result,) = report["results"]
    modes = {m["mode"]: m for m in result["modes"]}
    assert list(modes) == list(check.MODES) and not result["skipped"]
    for name, m in modes.items():
        assert m["seconds_per_step"]["cfg"] > 0 and m["seconds_per_step"]["no_cfg"] > 0
        clip = m["dit_seconds_per_clip"]
        assert clip["50 steps CFG 5"] > clip["lightx2v-4step"] > 0, name
        if name != "group-fp8":  # offloading leaves the latents as they are
            assert m["max_abs_diff_vs_none"] == 0.0, name
    assert 0 < modes["group-fp8"]["max_abs_diff_vs_none"] < 1.0
    assert modes["group-fp8"]["storage_dtype"] == "float8_e4m3fn"
    pipeline = report["pipeline_check"]  # the whole clip loop of the tiny Wan folders
    assert len(pipeline) == 2 * len(check.MODES) and not any("error" in r for r in pipeline)
    assert all(r["max_levels"] == 0 for r in pipeline if r["mode"] != "group-fp8")


def test_budget_skips_modes_and_configs_are_the_stored_ones(check, tmp_path: Path) -> None:
    report = check.main(["--tiny", "--out", str(tmp_path / "c.json"), "--steps", "2",
                         "--budget-s", "0", "--no-pipeline-check"])  # fmt: skip
    assert report["pipeline_check"] == []
    (result,) = report["results"]
    assert result["modes"] == [] and result["skipped"] == list(check.MODES)
    config = check.dit_config("wan2.1-i2v-14b-480p")
    assert (config["num_layers"], config["ffn_dim"], config["image_dim"]) == (40, 13824, 1280)
    assert check.dit_config("wan2.2-i2v-a14b")["image_dim"] is None
