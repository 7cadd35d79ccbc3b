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


def test_rollout_table_one_row_per_clip(tmp_path: Path, monkeypatch) -> None:
    """The real pipeline rolls out a synthetic scene, and each clip hands on the truth at
    its own times plus a known error, so every figure of the table is known."""
    from dataclasses import replace
    from types import SimpleNamespace

    from svi.bench import runner

    pipe = SVIPipeline.from_pretrained(build_tiny_world_model(tmp_path / "m"))
    size = pipe.bundle.preset.height
    assert size == 32  # below: 9 of the 32 rows carry the error a, 23 the error b
    # the error clip k + 1 carries, in uint8 levels (R, G, B) times k + 1: on rows 0-8
    # (an object over rows 0-7 and its 1 px margin) and on the background (rows 9-31)
    obj_err, bg_err = np.array([8, -4, 2]), np.array([-6, 0, 9])  # an exact channel counts
    scenes = []

    def render_scene(kind, seed, clips, num_frames, size, motion):
        """Frame t: grey 60 + 10 t; one object covering rows 0-7 of every frame."""
        total = clips * (num_frames - motion) + motion
        grey = (60 + 10 * np.arange(total)).astype(np.uint8)[:, None, None, None]
        masks = np.zeros((total, 1, size, size), bool)
        masks[:, :, :8] = True
        frames = np.broadcast_to(grey, (total, size, size, 3)).copy()
        scenes.append(
            SimpleNamespace(frames=frames, prompt="a", truth=SimpleNamespace(masks=masks))
        )
        return scenes[-1]

    real_generate = pipe.generate

    def generate(start, prompts, plan, **kwargs):
        """The real clips; clip k carries the stitched frames it ends with (the last M of
        the first (k + 1) (F - M) + M), plus its known error."""
        f, m = plan.num_frames, plan.carried_frames
        for clip in real_generate(start, prompts, plan, **kwargs):
            end = (clip.index + 1) * (f - m) + m
            carried = scenes[-1].frames[end - m : end].astype(np.int16)
            carried[:, :9] += (clip.index + 1) * obj_err
            carried[:, 9:] += (clip.index + 1) * bg_err
            yield replace(clip, carry=replace(clip.carry, frames=carried.astype(np.uint8)))

    monkeypatch.setattr(runner, "render_scene", render_scene)
    monkeypatch.setattr(pipe, "generate", generate)
    table = rollout_table(pipe, [9, 39], 3, GenerationConfig())
    assert len(scenes) == 2 and table["scenes"] == 2 and table["motion_frames"] == 2
    assert [r["clip"] for r in table["clips"]] == [1, 2, 3]
    for row in table["clips"]:
        a, b = row["clip"] * obj_err / 127.5, row["clip"] * bg_err / 127.5  # in [-1, 1] units
        assert row["n"] == 2  # scenes
        assert row["rms"] == pytest.approx(np.sqrt((9 * a @ a + 23 * b @ b) / (32 * 3)), rel=1e-5)
        assert row["background_rms"] == pytest.approx(np.sqrt(b @ b / 3), rel=1e-5)
        assert row["channel_mean"] == pytest.approx(list((9 * a + 23 * b) / 32), abs=1e-5)
    text = markdown(bank_table(_checkpoint(tmp_path)), table)
    assert "bank image error" in text and "clip 3" in text
