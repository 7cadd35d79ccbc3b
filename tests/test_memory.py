"""The memory model (svi.memory): counts from the real classes on meta, the modes' order,
the issue's target, the CLI and the README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_scripts import load_benchmark
from svi.cli import main
from svi.errors import SviError
from svi.memory import GIB, MODELS, latent_tokens, predict
from svi.models.offload import OFFLOAD_MODES, MemoryMode
from wan_fixtures import build_tiny_wan_folder


def _params(prediction) -> dict[str, int]:
    return {ph.component: ph.params for ph in prediction.phases}


def test_parameter_counts_of_the_official_configs() -> None:
    wan21 = _params(predict("wan2.1-i2v-14b-480p"))
    a14b = _params(predict("wan2.2-i2v-a14b"))
    assert 16.3e9 < wan21["DiT"] < 16.5e9  # "14B" plus the CLIP path and embedders
    assert 14.2e9 < a14b["DiT high-noise"] == a14b["DiT low-noise"] < 14.4e9
    assert 5.6e9 < wan21["text encoder"] < 5.7e9  # umT5-XXL encoder, tied embedding
    assert 0.63e9 < wan21["CLIP"] < 0.64e9  # ViT-H/14 vision tower + projection
    assert 0.12e9 < wan21["VAE"] < 0.13e9
    assert "CLIP" not in a14b


def test_tokens_and_weights_bytes() -> None:
    p = predict("wan2.1-i2v-14b-480p", MemoryMode(offload="model"))
    assert p.tokens == 21 * 30 * 52 == latent_tokens({"patch_size": [1, 2, 2]}, 480, 832, 81)
    assert predict("wan2.1-i2v-14b-720p").tokens == 21 * 45 * 80
    dit = next(ph for ph in p.phases if ph.component == "DiT")
    assert 2 * dit.params <= dit.weights < 2.01 * dit.params  # bf16, a few float32 modules
    fp8 = predict("wan2.1-i2v-14b-480p", MemoryMode(offload="model", weights_dtype="fp8"))
    fp8_dit = next(ph for ph in fp8.phases if ph.component == "DiT")
    assert fp8_dit.weights < 0.55 * dit.weights
    plain = predict("wan2.1-i2v-14b-480p", MemoryMode(offload="model"), cfg=1.0)
    act = next(ph for ph in plain.phases if ph.component == "DiT").activations
    assert 0.45 < act / dit.activations < 0.55  # CFG doubles the DiT batch


@pytest.mark.parametrize("model", list(MODELS))
def test_each_mode_needs_no_more_than_the_one_before(model: str) -> None:
    for dtype in ("bf16", "fp8"):
        peaks = [predict(model, MemoryMode(off, dtype)).peak for off in OFFLOAD_MODES]
        assert peaks == sorted(peaks, reverse=True), (dtype, peaks)
    tiled = predict(model, MemoryMode("sequential", vae_tiling=True))
    assert tiled.peak <= predict(model, MemoryMode("sequential")).peak


def test_the_issue_target_group_offloading_and_fp8_fits_22_gb() -> None:
    p = predict("wan2.1-i2v-14b-480p", MemoryMode("group", "fp8"), frames=81)
    assert p.peak <= 22e9, p.peak / GIB


def test_a_wan_folder_is_read_from_its_own_configs(tmp_path: Path) -> None:
    from diffusers import WanTransformer3DModel

    folder = build_tiny_wan_folder(tmp_path, "wan2.1-i2v-14b-480p")
    p = predict(folder, height=32, width=32, frames=9)
    dit = WanTransformer3DModel.from_pretrained(folder / "transformer")
    assert _params(p)["DiT"] == sum(t.numel() for t in dit.parameters())
    with pytest.raises(SviError, match="memory model covers"):
        predict(build_tiny_wan_folder(tmp_path, "wan2.2-ti2v-5b"))
    with pytest.raises(SviError, match="multiples of 16"):
        predict("wan2.1-i2v-14b-480p", height=470)


def test_cli(capsys) -> None:
    args = ["info", "--memory", "--model", "wan2.1-i2v-14b-480p", "--offload", "group",
            "--weights-dtype", "fp8"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "32760 DiT tokens" in out and "float8_e4m3fn" in out
    assert out.splitlines()[-1].split()[0] == "peak"
    assert main(["info", "--memory"]) == 2
    assert "--memory needs --model" in capsys.readouterr().err


def test_readme_table_is_current() -> None:
    module = load_benchmark("memory_table")
    assert module.main(["--check"]) == 0, "run benchmarks/memory_table.py"
