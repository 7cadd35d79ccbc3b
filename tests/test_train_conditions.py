"""Training SVI-Talk / SVI-Dance adapters: the condition modules train with the LoRA, the
condition rides along with ERFT, the adapter file loads back, resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from svi.checkpoint import list_checkpoints
from svi.config import DataConfig, ErftConfig, OptimConfig, TrainConfig
from svi.errors import SviError
from svi.lora import read_lora, read_lora_metadata
from svi.pipeline import SVIPipeline
from svi.train import train
from svi.train_setup import resolve_config
from world_fixtures import build_tiny_world_model

KIND = {"audio": "talking", "pose": "dancing"}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("base") / "m")


def _config(base: Path, condition: str, erft: bool = True, **kw) -> TrainConfig:
    data = DataConfig(kinds=(KIND[condition],), pool_size=3, episode_frames=12,
                      condition=condition, condition_dropout=0.5)  # fmt: skip
    return TrainConfig(
        init=str(base), steps=4, batch_size=2, checkpoint_every=2, log_every=1, keep_last=10,
        lora_rank=4, lora_alpha=4, ema_decay=0.9, data=data,
        optim=OptimConfig(lr=1e-2, warmup_steps=1),
        erft=ErftConfig(num_bins=5, capacity=3) if erft else None, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("condition", ["audio", "pose"])
def test_adapter_trains_the_modules_and_loads_back(tiny_base: Path, tmp_path, condition) -> None:
    final = train(_config(tiny_base, condition), tmp_path / "run", progress=False)
    path = final / "svi_lora.safetensors"
    contents = read_lora(path)
    assert contents.entries  # the LoRA pairs ...
    zero_init = [
        t
        for p, t in contents.extras.items()
        if ".audio_cross_attn.proj." in p or p.startswith("dwpose_embedding.12.")
    ]
    assert zero_init and all(t.abs().sum() > 0 for t in zero_init)  # trained off zero
    meta = read_lora_metadata(path)
    assert meta["condition"]["kind"] == condition and meta["training"]["data"]["condition"]
    for name in ("svi_lora.safetensors", "svi_lora_wan.safetensors"):
        pipe = SVIPipeline.from_pretrained(str(tiny_base))
        assert pipe.load_lora(final / name)["condition"] == condition


def test_conditional_erft_resume_is_exact(tiny_base: Path, tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = _config(tiny_base, "audio")
    train(cfg, full, progress=False)
    train(TrainConfig(**{**cfg.__dict__, "steps": 2}), part, progress=False)
    (part / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1), encoding="utf-8")
    train(cfg, part, resume=True, progress=False)
    a = load_file(str(full / "final" / "svi_lora.safetensors"))
    b = load_file(str(part / "final" / "svi_lora.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("audio_proj.") for k in a)
    ck = load_file(str(list_checkpoints(full)[-1] / "model.safetensors"))
    assert any("audio_cross_attn" in k for k in ck)  # checkpointed with the LoRA


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"kinds": ("consistent",)}, r'needs data.kinds = \["talking"\]'),
        ({"source": "/nonexistent"}, "dataset folders are not read with a condition"),
        ({"condition": "smell"}, "data.condition must be audio or pose"),
    ],
)
def test_condition_settings_are_checked(tiny_base: Path, change: dict, says: str) -> None:
    cfg = _config(tiny_base, "audio")
    with pytest.raises(SviError, match=says):
        resolve_config(TrainConfig(**{**cfg.__dict__, "data": DataConfig(
            **{**cfg.data.__dict__, **change})}))  # fmt: skip


@pytest.mark.parametrize(("p", "kept"), [(0.0, [True] * 4), (1.0, [False] * 4)])
def test_condition_dropout_nulls_whole_samples(tiny_base: Path, p: float, kept: list) -> None:
    """A dropped sample sees the null condition (zeros), the others theirs: the training
    call equals a call whose batch has zero rows where dropped."""
    from functools import partial

    from svi.clips import ClipBatch
    from svi.conditions.windows import LatentAudio
    from svi.sampling import Experts
    from svi.train import _driven

    cfg = _config(tiny_base, "audio")
    cfg = TrainConfig(
        **{**cfg.__dict__, "data": DataConfig(**{**cfg.data.__dict__, "condition_dropout": p})}
    )
    audio = LatentAudio(torch.ones(4, 1, 5, 40), torch.ones(4, 4, 5, 40))
    batch = ClipBatch(torch.zeros(4, 3, 5, 8, 8), torch.zeros(4, 3, 8, 8), ["a"] * 4, audio)
    call = _driven(Experts(torch.nn.Identity()), batch, cfg, torch.Generator().manual_seed(0))
    assert isinstance(call, partial) and call.keywords["keep"].tolist() == kept
    rows = call.func.drive.batch(call.keywords["keep"])
    assert [bool(r.any()) for r in rows.first] == kept


def test_cli_condition_flag_sets_the_condition_and_its_world_kind(tiny_base: Path, tmp_path):
    from svi.cli import main

    recipe = tmp_path / "r.toml"
    lines = [f'init = "{tiny_base}"', "steps = 1", "batch_size = 1", "lora_rank = 2",
             "checkpoint_every = 1", "[data]", "pool_size = 1", "episode_frames = 8"]  # fmt: skip
    recipe.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    args = ["train", "--recipe", str(recipe), "--out", str(run), "--no-progress"]
    assert main([*args, "--condition", "pose"]) == 0
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["condition"] == "pose" and data["kinds"] == ["dancing"]
    assert main([*args[:-2], str(tmp_path / "bad"), "--condition", "smell"]) == 2
