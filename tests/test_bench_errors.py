"""Bank vs rollout error statistics (svi bench errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from svi.bench.errors import band_shares, bank_table, describe, markdown, rollout_table
from svi.erft.bank import ErrorBank
from svi.errors import SviError
from svi.pipeline import GenerationConfig, SVIPipeline
from world_fixtures import build_tiny_world_model


def test_band_shares_of_known_patterns() -> None:
    y, x = np.mgrid[:32, :32]
    checker = ((x + y) % 2).astype(float)  # period 2: all energy at the highest frequency
    assert band_shares(checker)["high"] == pytest.approx(1.0)
    slow = np.sin(2 * np.pi * x / 32.0)  # period 32: all low
    assert band_shares(slow)["low"] == pytest.approx(1.0)
    grid = np.sin(2 * np.pi * x / 6.0)  # period 6 (1/6 cycles/px): mid
    assert band_shares(grid)["mid"] > 0.9
    assert np.isnan(band_shares(np.ones((8, 8)))["low"])  # no energy at all


def test_describe_rms_and_channel_bias() -> None:
    e = np.zeros((4, 3, 2, 8, 8), np.float32)
    e[:, 0] = 0.5  # a red bias
    d = describe(e)
    assert d["rms"] == pytest.approx(np.sqrt(0.25 / 3))
    assert d["channel_mean"] == pytest.approx([0.5, 0.0, 0.0]) and d["n"] == 4


def _checkpoint(tmp_path: Path, pool: int = 1) -> Path:
    bank = ErrorBank(torch.tensor([1.0, 0.5, 0.1]), capacity=4, spatial_pool=pool)
    g = torch.Generator().manual_seed(0)
    bank.add(
        torch.randn(6, 3, 5, 8, 8, generator=g) * 0.2, torch.tensor([1.0, 1, 0.5, 0.5, 0.1, 0.1])
    )
    folder = tmp_path / f"step-{pool}"
    folder.mkdir()
    save_file({f"bank.video.{k}": v for k, v in bank.state_dict().items()},
              str(folder / "extra.safetensors"))  # fmt: skip
    return folder


@pytest.mark.parametrize("pool", [1, 2])
def test_bank_table_reads_a_checkpoint(tmp_path: Path, pool: int) -> None:
    table = bank_table(_checkpoint(tmp_path, pool), image_frames=3)
    assert [b["n"] for b in table["bins"]] == [2, 2, 2]
    rms = table["image_error"]["rms"]
    assert (0.15 if pool == 1 else 0.05) < rms < 0.25  # pooling averages the noise down
    assert table["image_error"]["n"] == 6


def test_bank_table_refuses_a_run_without_banks(tmp_path: Path) -> None:
    with pytest.raises(SviError, match="no banks"):
        bank_table(tmp_path)


def test_rollout_table_one_row_per_clip(tmp_path: Path) -> None:
    pipe = SVIPipeline.from_pretrained(build_tiny_world_model(tmp_path / "m"))
    table = rollout_table(pipe, [9, 39], 3, GenerationConfig())
    assert [r["clip"] for r in table["clips"]] == [1, 2, 3]
    assert all(r["rms"] > 0 and r["background_rms"] > 0 for r in table["clips"])
    text = markdown(bank_table(_checkpoint(tmp_path)), table)
    assert "bank image error" in text and "clip 3" in text
