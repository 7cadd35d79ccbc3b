"""The preset table and the model-loading errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from svi.checkpoint import load_checkpoint
from svi.errors import SviError
from svi.models.bundle import build_world_transformer, load_bundle, model_dir
from svi.models.presets import PRESETS, ModelPreset, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_consistent(name: str) -> None:
    p = get_preset(name)
    assert p.name == name
    assert 1 <= p.motion_frames < p.num_frames and 1 <= p.stream_motion_frames < p.num_frames
    assert p.mask in ("first", "motion") and p.padding in ("anchor", "zeros", "last")
    assert p.steps >= 1 and p.shift > 0 and p.fps > 0
    if p.family == "wan":
        assert p.wan_variant == name and (p.num_frames - 1) % 4 == 0 and p.mask == "first"


def test_stored_presets_round_trip_and_older_files_still_load() -> None:
    p = get_preset("world-tiny")
    assert ModelPreset.from_dict(p.to_dict()) == p
    older = {**p.to_dict(), "lora_rank": 16, "lora_alpha": 16}  # retired fields, still stored
    assert ModelPreset.from_dict(older) == p
    with pytest.raises(TypeError):
        ModelPreset.from_dict({**p.to_dict(), "lora_rnak": 16})
    with pytest.raises(TypeError):
        ModelPreset.from_dict(["world-tiny"])  # type: ignore[arg-type]


def test_world_tiny_is_a_wan_transformer_with_i2v_channels() -> None:
    p = get_preset("world-tiny")
    model = build_world_transformer(p)
    assert model.config.in_channels == 2 * 3 + 4 and model.config.out_channels == 3
    assert model.config.image_dim is None  # no CLIP path: any text length works
    n = sum(t.numel() for t in model.parameters())
    assert 1.0e6 < n < 2.0e6
    x = torch.zeros(1, 10, p.num_frames, p.height, p.width)
    out = model(x, torch.tensor([500.0]), torch.zeros(1, 7, 384), return_dict=False)[0]
    assert out.shape == (1, 3, p.num_frames, p.height, p.width)


def test_unknown_preset_and_bad_model_paths(tmp_path: Path) -> None:
    with pytest.raises(SviError, match="unknown preset"):
        get_preset("wan9")
    with pytest.raises(SviError, match="neither a preset nor"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(SviError, match="needs its weights"):
        load_bundle("wan2.1-i2v-14b-480p")
    with pytest.raises(SviError, match=r"holds neither svi_model\.json"):
        model_dir(tmp_path)  # resolved without loading, the same errors as load_bundle
    assert model_dir("world-tiny") == model_dir() == Path(load_bundle().source)
    (tmp_path / "svi_model.json").write_text("{broken")
    with pytest.raises(SviError, match="not valid JSON"):
        load_bundle(tmp_path)
    (tmp_path / "svi_model.json").write_text(json.dumps({"preset": {"name": "x"}}))
    with pytest.raises(SviError, match="does not describe a preset"):
        load_bundle(tmp_path)


def test_incomplete_or_corrupt_checkpoints(tmp_path: Path) -> None:
    ck = tmp_path / "step-0000001"
    ck.mkdir()
    (ck / "state.json").write_text("{}")
    with pytest.raises(SviError, match="incomplete"):
        load_checkpoint(ck)
    for name in ("model", "optimizer", "extra"):
        (ck / f"{name}.safetensors").write_bytes(b"garbage")
    with pytest.raises(SviError, match="corrupt"):
        load_checkpoint(ck)
