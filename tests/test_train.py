"""The training loop: it learns, it checkpoints, and resume is bit-exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from svi import flow
from svi.checkpoint import list_checkpoints
from svi.clips import WorldClips
from svi.config import DataConfig, OptimConfig, TrainConfig, load_recipe
from svi.errors import SviError
from svi.sampling import Experts
from svi.train import lr_at, make_bundle, prepare_batch, train

SMALL = TrainConfig(
    steps=4,
    batch_size=2,
    checkpoint_every=2,
    log_every=1,
    keep_last=10,
    data=DataConfig(pool_size=4, episode_frames=12),
    optim=OptimConfig(lr=1e-3, warmup_steps=2),
)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    config = TrainConfig(data=DataConfig(text_dropout=0.0, p_single_frame=0.0))
    bundle = make_bundle(config)
    data = WorldClips(("consistent",), 2, 12, 5, 32, show_progress=False)
    gen = torch.Generator().manual_seed(0)
    batch = data.sample(2, np.random.default_rng(0), 2)
    x0, y, text = prepare_batch(batch, bundle, config, gen)
    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.tensor([0.3, 0.7])
    x_t, target = flow.interpolate(x0, noise, sigma), flow.velocity_target(x0, noise)
    model = bundle.transformer.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    velocity = Experts(model)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(velocity(x_t, sigma, y, text), target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    train(SMALL, full, progress=False)
    train(TrainConfig(**{**SMALL.__dict__, "steps": 2}), part, progress=False)
    # the interrupted run continues from its step-2 checkpoint under the full config
    (part / "config.json").write_text(json.dumps(SMALL.to_dict(), indent=1), encoding="utf-8")
    train(SMALL, part, resume=True, progress=False)
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_full = [json.loads(line)["loss"] for line in (full / "log.jsonl").open()]
    log_part = [json.loads(line)["loss"] for line in (part / "log.jsonl").open()]
    assert log_part[:2] + log_part[2:] == log_full
    assert [p.name for p in list_checkpoints(full)] == ["step-0000002", "step-0000004"]


def test_refuses_to_overwrite_a_run_and_to_resume_another_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = TrainConfig(**{**SMALL.__dict__, "steps": 2})
    train(cfg, run, progress=False)
    with pytest.raises(SviError, match="already holds checkpoints"):
        train(cfg, run, progress=False)
    with pytest.raises(SviError, match="differs"):
        train(TrainConfig(**{**cfg.__dict__, "seed": 5}), run, resume=True, progress=False)


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = TrainConfig(steps=100, optim=OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1))
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=0.01)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_recipe_loading_and_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('steps = 7\n[data]\nkinds = ["consistent"]\n[optim]\nlr = 1\n')
    cfg = load_recipe(good)
    assert cfg.steps == 7 and cfg.data.kinds == ("consistent",) and cfg.optim.lr == 1.0
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 7\n")
    with pytest.raises(SviError, match=r"unknown key bad\.toml\.stepz"):
        load_recipe(bad)
    with pytest.raises(SviError, match="does not exist"):
        load_recipe(tmp_path / "missing.toml")


def test_shipped_recipes_parse() -> None:
    for recipe in Path(__file__).resolve().parents[1].glob("recipes/*.toml"):
        load_recipe(recipe)
