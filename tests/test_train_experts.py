"""Per-expert ERFT LoRAs of Wan 2.2 A14B (``--expert high | low | both``) and SVI 2.0
Pro's anchor-first layout in training, on a tiny real-class A14B folder: each expert
trains on its own sigma range, ``both`` exports the high/low pair that ``svi generate
--variant 2.0-pro`` loads, resume stays bit-exact, and the training ``y`` is the one
generation builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from svi.checkpoint import list_checkpoints
from svi.cli import main
from wan_fixtures import build_tiny_wan_folder

CLIP = ["--height", "32", "--width", "32", "--num-frames", "9"]
BOUNDARY = 0.9  # the tiny A14B folder's boundary_ratio
RECIPE = """\
lora_rank = 4
ema_decay = 0.9
checkpoint_every = 1
log_every = 1
batch_size = 2
[optim]
lr = 1e-3
warmup_steps = 1
[erft]
p_clean = 0.0
num_bins = 5
capacity = 4
[data]
pool_size = 8
padding = "anchor-first"
"""


@pytest.fixture(scope="module")
def a14b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wan_folder(tmp_path_factory.mktemp("a14b"), "wan2.2-i2v-a14b")


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def _train(model: Path, out: Path, recipe: Path, *args: str) -> int:
    argv = ["train", "--model", str(model), "--recipe", str(recipe), *CLIP, "--out", str(out),
            "--no-progress", *args]  # fmt: skip
    return main(argv)


def _recording_sigmas(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record every batch of training sigmas the loop draws."""
    import svi.train

    drawn: list[torch.Tensor] = []
    real = svi.train.draw_sigmas

    def record(*args, **kwargs) -> torch.Tensor:
        sigma = real(*args, **kwargs)
        drawn.append(sigma.clone())
        return sigma

    monkeypatch.setattr(svi.train, "draw_sigmas", record)
    return drawn


@pytest.mark.parametrize("expert", ["high", "low"])
def test_one_expert_trains_only_its_lora_on_its_sigma_range(
    a14b: Path, recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expert: str
) -> None:
    from svi.lora import read_lora_metadata

    drawn = _recording_sigmas(monkeypatch)
    run = tmp_path / "run"
    assert _train(a14b, run, recipe, "--expert", expert, "--steps", "2", "--seed", "1") == 0
    sigmas = torch.cat(drawn)
    assert sigmas.numel() == 4  # 2 steps x batch 2
    in_range = sigmas >= BOUNDARY if expert == "high" else sigmas < BOUNDARY
    assert bool(in_range.all()), sigmas
    other = "low" if expert == "high" else "high"
    names = sorted(p.name for p in (run / "final").iterdir())
    assert names == [f"svi_lora_{expert}.safetensors", f"svi_lora_{expert}_wan.safetensors"]
    model = load_file(str(list_checkpoints(run)[-1] / "model.safetensors"))
    assert model and all(k.startswith(f"{expert}.") for k in model)
    assert not any(k.startswith(f"{other}.") for k in model)
    lora = load_file(str(run / "final" / f"svi_lora_{expert}.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in lora.items())
    meta = read_lora_metadata(run / "final" / f"svi_lora_{expert}.safetensors")
    assert meta["expert"] == expert and meta["boundary"] == pytest.approx(BOUNDARY)
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["expert"] == expert


def test_both_experts_export_a_pair_that_generate_2_0_pro_loads(
    a14b: Path, recipe: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from svi.lora import read_lora_metadata

    run = tmp_path / "run"
    assert _train(a14b, run, recipe, "--expert", "both", "--erft", "--steps", "2") == 0
    final = run / "final"
    for expert in ("high", "low"):
        assert read_lora_metadata(final / f"svi_lora_{expert}.safetensors")["expert"] == expert
    image, out = tmp_path / "start.png", tmp_path / "clip.mp4"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    argv = ["generate", "--model", str(a14b), "--variant", "2.0-pro",
            "--lora", str(final / "svi_lora_high.safetensors"),
            "--lora-low", str(final / "svi_lora_low.safetensors"), "--image", str(image),
            "--prompt", "a red disc", *CLIP, "--steps", "1", "--clips", "2", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert out.is_file()


def test_both_draws_each_step_from_one_expert_range() -> None:
    """``both``: every step's sigmas lie in one expert's range, both ranges occur, and
    the step's expert depends on seed and step only (the same on every process)."""
    from svi.config import TrainConfig
    from svi.train import draw_sigmas

    config = TrainConfig(expert="both", lora_rank=4)
    gen = torch.Generator().manual_seed(0)
    steps = [draw_sigmas(3, gen, 5.0, config, step, BOUNDARY) for step in range(40)]
    sides = [bool((s >= BOUNDARY).all()) for s in steps]
    assert all(bool((s >= BOUNDARY).all() or (s < BOUNDARY).all()) for s in steps)
    assert any(sides) and not all(sides)
    other = torch.Generator().manual_seed(123)  # another process's generator
    again = [bool((draw_sigmas(3, other, 5.0, config, k, BOUNDARY) >= BOUNDARY).all())
             for k in range(40)]  # fmt: skip
    assert again == sides


def test_resume_of_a_both_run_is_bit_identical(
    a14b: Path, recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import svi.train

    args = ("--expert", "both", "--erft", "--steps", "3")
    full, part = tmp_path / "full", tmp_path / "part"
    assert _train(a14b, full, recipe, *args) == 0
    real = svi.train._checkpoint

    def crash(accelerator, out, step, *rest, **kw) -> None:
        if step == 2:
            raise RuntimeError("simulated crash")
        real(accelerator, out, step, *rest, **kw)

    with monkeypatch.context() as m:
        m.setattr(svi.train, "_checkpoint", crash)
        assert _train(a14b, part, recipe, *args) == 1
    assert [p.name for p in list_checkpoints(part)] == ["step-0000001"]
    assert _train(a14b, part, recipe, *args, "--resume") == 0
    for name in ("svi_lora_high.safetensors", "svi_lora_low.safetensors"):
        a, b = (load_file(str(r / "final" / name)) for r in (full, part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = (load_file(str(list_checkpoints(r)[-1] / "extra.safetensors")) for r in (full, part))
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    logs = [[json.loads(x)["loss"] for x in (r / "log.jsonl").open()] for r in (full, part)]
    assert logs[0] == logs[1] and len(logs[0]) == 3


def test_both_experts_train_in_two_processes(a14b: Path, recipe: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo), ``--expert both``: every process routes a step
    to the same expert (else DDP would wait forever), both LoRAs train, the shared ERFT
    banks agree, and the CLI reports once."""
    import os
    import shutil
    import subprocess
    import sys

    from svi.config import TrainConfig
    from svi.models.presets import get_preset
    from svi.train import draw_sigmas

    steps, shift = 4, get_preset("wan2.2-i2v-a14b").shift
    config = TrainConfig(expert="both", lora_rank=4)  # the recipe's seed (0)
    gen = torch.Generator()
    drawn = {bool((draw_sigmas(1, gen, shift, config, k, BOUNDARY) >= BOUNDARY).all())
             for k in range(steps)}  # fmt: skip
    assert drawn == {True, False}  # the run below meets both experts
    recipe.write_text(recipe.read_text(encoding="utf-8").replace(
        "capacity = 4\n", 'capacity = 4\nshare_errors = "always"\n'), encoding="utf-8")  # fmt: skip
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    run = tmp_path / "run"
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "svi.cli", "train", "--model", str(a14b),
           "--recipe", str(recipe), *CLIP, "--out", str(run), "--no-progress", "--expert", "both",
           "--erft", "--steps", str(steps)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("model written to") == 1
    for expert in ("high", "low"):  # LoRA B starts at zero: nonzero means it trained
        lora = load_file(str(run / "final" / f"svi_lora_{expert}.safetensors"))
        ups = [v for k, v in lora.items() if "lora_B" in k]
        assert ups and any(bool(v.abs().max() > 0) for v in ups), expert
    ckpt = list_checkpoints(run)[-1]
    a = load_file(str(ckpt / "extra.safetensors"))
    b = load_file(str(ckpt / "extra-rank1.safetensors"))
    keys = [k for k in a if k.startswith("bank.") and not k.endswith("generator")]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)


@pytest.fixture(scope="module")
def wan21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wan_folder(tmp_path_factory.mktemp("wan21"), "wan2.1-i2v-14b-480p")


@pytest.mark.parametrize("model", ["wan21", "world"])
def test_expert_needs_two_experts_one_line_exit_2_nothing_written(
    request: pytest.FixtureRequest, tmp_path: Path, capsys, model: str
) -> None:
    before = sorted(tmp_path.iterdir())
    argv = ["train", "--out", str(tmp_path / "run"), "--expert", "high", "--no-progress"]
    if model == "wan21":
        argv += ["--model", str(request.getfixturevalue("wan21")), *CLIP]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "needs a model with two experts" in lines[0]
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("single", [False, True], ids=["motion", "first-clip"])
def test_anchor_first_training_y_is_build_y_anchor_first(a14b: Path, single: bool) -> None:
    from svi.clips import ClipBatch
    from svi.conditioning import build_y_anchor_first
    from svi.config import DataConfig, TrainConfig
    from svi.train import make_bundle, prepare_batch, resolve_config

    data = DataConfig(padding="anchor-first", p_single_frame=float(single), text_dropout=0.0)
    config = resolve_config(TrainConfig(init=str(a14b), height=32, width=32, num_frames=9,
                                        lora_rank=4, data=data))  # fmt: skip
    bundle = make_bundle(config)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, 9, 32, 32, generator=g) * 2 - 1
    anchors = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    batch = ClipBatch(frames, anchors, ["a red disc", "a blue square"])
    x0, y, _ = prepare_batch(batch, bundle, config, torch.Generator().manual_seed(1))
    codec = bundle.codec
    motion = None if single else x0[:, :, :1]  # M = 1 pixel frame: latent frame 0
    expected = build_y_anchor_first(codec.encode(anchors[:, :, None]), motion, x0.shape[2],
                                    codec.temporal_factor)  # fmt: skip
    assert y.shape == expected.shape and torch.equal(y, expected)
    assert torch.equal(y[:, :4, 0], torch.ones_like(y[:, :4, 0]))  # mask: frame 0 only
    assert not y[:, :4, 1:].any()


@pytest.mark.parametrize("padding", ["anchor-first", "anchor"])
def test_erft_image_errors_skip_the_anchor_frame_of_anchor_first(padding: str) -> None:
    """Anchor-first: the image-error window starts at latent frame 1 (the anchor stays as
    encoded); the other layouts keep the window at frame 0."""
    from svi.config import DataConfig, ErftConfig, TrainConfig
    from svi.train import _inject, _make_injector

    erft = ErftConfig(p_clean=0.0, p_noise=0.0, p_video=0.0, p_image=1.0, num_bins=3,
                      capacity=2, image_error_frames=1)  # fmt: skip
    config = TrainConfig(erft=erft, data=DataConfig(padding=padding))
    gen = torch.Generator().manual_seed(0)
    injector = _make_injector(config, 5.0, gen)
    injector.video_bank.add(torch.ones(1, 16, 3, 4, 4), torch.tensor([0.5]))
    x0, noise = torch.zeros(2, 16, 3, 4, 4), torch.zeros(2, 16, 3, 4, 4)
    y = torch.zeros(2, 20, 3, 4, 4)
    inj = _inject(injector, x0, noise, y, torch.tensor([0.5, 0.5]), config)
    touched = [bool(inj.y[:, 4:, k].any()) for k in range(3)]
    assert touched == ([False, True, False] if padding == "anchor-first" else [True, False, False])
    assert not inj.y[:, :4].any()


@pytest.mark.parametrize("padding", ["anchor-first", "anchor"])
def test_augment_skips_the_anchor_frame_of_anchor_first(padding: str) -> None:
    from svi.config import AugmentConfig, DataConfig, TrainConfig
    from svi.train import _augment

    augment = AugmentConfig(p_blur=0.0, p_colour=0.0, p_noise=1.0, p_clean=0.0, frames=1)
    config = TrainConfig(augment=augment, data=DataConfig(padding=padding))
    y = torch.zeros(2, 20, 3, 4, 4)
    out = _augment(y, config, torch.Generator().manual_seed(0))
    touched = [bool(out[:, 4:, k].any()) for k in range(3)]
    assert touched == ([False, True, False] if padding == "anchor-first" else [True, False, False])
