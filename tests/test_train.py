"""The training loop: it learns, it checkpoints, and resume is bit-exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

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
    state = list_checkpoints(run)[-1] / "state.json"
    written = json.loads(state.read_text(encoding="utf-8"))
    assert written["processes"] == {"distributed_type": "NO", "world_size": 1, "nodes": 1}
    written["processes"]["world_size"] = 2  # as if written by a 2-process launch
    state.write_text(json.dumps(written), encoding="utf-8")
    with pytest.raises(SviError, match="written by 2 processes and this run has 1"):
        train(cfg, run, resume=True, progress=False)
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


def _chain(recipe: Path) -> list[tuple[Path, dict]]:
    """(file, its tables) of a recipe and of each recipe it extends, nearest first."""
    chain = []
    while True:
        data = tomllib.loads(recipe.read_text(encoding="utf-8"))
        parent = data.pop("extends", None)
        chain.append((recipe, data))
        if parent is None:
            return chain
        recipe = recipe.parent / parent


def _written(recipe: Path) -> dict[tuple[str, ...], object]:
    """Every value a recipe sets, by key path (``("optim", "lr")``): its own, then those
    of the recipes it extends that it does not set itself."""
    values: dict[tuple[str, ...], object] = {}

    def walk(table: dict, prefix: tuple[str, ...]) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, (*prefix, key))
            else:
                values.setdefault((*prefix, key), value)

    for _, data in _chain(recipe):
        walk(data, ())
    return values


def test_shipped_recipes_parse() -> None:
    """Every shipped recipe loads holding each value it, or a recipe it extends, writes
    (the nearer file winning); the anchor-padding contenders keep the shared file's
    budget, seed and optimiser, as that file demands."""
    folder = Path(__file__).resolve().parents[1] / "recipes"
    shared = folder / "world-tiny-lora-anchor-base.toml"
    recipes = sorted(folder.glob("*.toml"))
    assert shared in recipes and len(recipes) > 1
    base = load_recipe(shared)
    contenders = 0
    for recipe in recipes:
        cfg = load_recipe(recipe)
        written = _written(recipe)
        assert written, recipe.name
        for path, value in written.items():
            got = cfg
            for key in path:
                got = getattr(got, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, (recipe.name, path)
        if recipe != shared and shared in [file for file, _ in _chain(recipe)]:
            contenders += 1
            same = ("steps", "batch_size", "seed", "optim", "lora_rank", "lora_alpha", "init")
            assert [getattr(cfg, k) for k in same] == [getattr(base, k) for k in same], recipe
    assert contenders >= 2


def _lora_config(erft: bool, init: str, erft_kw: dict | None = None, **kw) -> TrainConfig:
    from svi.config import ErftConfig

    base = {**SMALL.__dict__, "init": init, "lora_rank": 4, "lora_alpha": 4, "ema_decay": None}
    if erft:
        base["erft"] = ErftConfig(num_bins=5, capacity=3, p_clean=0.2, **(erft_kw or {}))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from world_fixtures import build_tiny_world_model

    return build_tiny_world_model(tmp_path_factory.mktemp("base") / "m")


def test_erft_lora_run_banks_errors_and_exports_both_forms(tiny_base: Path, tmp_path) -> None:
    from svi.lora import apply_lora, read_lora_metadata
    from svi.models.bundle import load_bundle

    run = tmp_path / "erft"
    final = train(_lora_config(True, str(tiny_base), steps=6, checkpoint_every=3), run,
                  progress=False)  # fmt: skip
    banks = [json.loads(line) for line in (run / "banks.jsonl").open()]
    assert (run / "banks.png").stat().st_size > 1000
    assert sum(banks[-1]["video"]["count"]) > 0 and sum(banks[-1]["noise"]["count"]) > 0
    assert all(c <= 3 for c in banks[-1]["video"]["count"])  # capacity per bin
    meta = read_lora_metadata(final / "svi_lora.safetensors")
    assert meta["erft"] is True and meta["rank"] == 4
    for name in ("svi_lora.safetensors", "svi_lora_wan.safetensors"):
        report = apply_lora(load_bundle(str(tiny_base)).transformer, final / name)
        assert report.n_modules == 10  # q, k, v, o of both attentions + 2 FFN linears, 1 block


ROLLOUT = {"image_errors": "rollout", "rollout_every": 2, "rollout_steps": 2, "p_image": 1.0}


@pytest.mark.parametrize("erft_kw", [{}, ROLLOUT], ids=["one-step", "rollout"])
def test_erft_resume_is_exact_with_banks(tiny_base: Path, tmp_path: Path, erft_kw) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = _lora_config(True, str(tiny_base), erft_kw, steps=6, checkpoint_every=3)
    train(cfg, full, progress=False)
    train(TrainConfig(**{**cfg.__dict__, "steps": 3}), part, progress=False)
    (part / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1), encoding="utf-8")
    train(cfg, part, resume=True, progress=False)
    a = load_file(str(full / "final" / "svi_lora.safetensors"))
    b = load_file(str(part / "final" / "svi_lora.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(x)["loss"] for x in (r / "log.jsonl").open()] for r in (full, part)]
    assert losses[0] == losses[1]
    banks = [[json.loads(x) for x in (r / "banks.jsonl").open()][-1] for r in (full, part)]
    if erft_kw:  # steps 0, 2, 4 harvested one generated clip each
        assert banks[0]["image"]["count"] == [3]
    for bank in banks[0].keys() - {"step"}:  # same entries; allocation slack may differ
        assert {k: v for k, v in banks[0][bank].items() if k != "bytes"} == {
            k: v for k, v in banks[1][bank].items() if k != "bytes"
        }
    ea = load_file(str(list_checkpoints(full)[-1] / "extra.safetensors"))
    eb = load_file(str(list_checkpoints(part)[-1] / "extra.safetensors"))
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)


def test_augment_resume_is_exact(tiny_base: Path, tmp_path: Path, monkeypatch) -> None:
    """Handcrafted augmentation draws from the loop's checkpointed generator: resume is exact."""
    import svi.train
    from svi.config import AugmentConfig

    calls: list[float] = []  # per step: how much y was degraded
    original = svi.train.augment_y

    def counted(y, config, gen):
        out = original(y, config, gen)
        calls.append(float((out.y - y).abs().sum()))
        return out

    monkeypatch.setattr(svi.train, "augment_y", counted)
    full, part = tmp_path / "full", tmp_path / "part"
    aug = AugmentConfig(p_clean=0.0, p_blur=1.0, p_noise=1.0, p_colour=1.0)
    cfg = _lora_config(False, str(tiny_base), augment=aug)  # 4 steps, checkpoint at 2
    train(cfg, full, progress=False)
    assert len(calls) == 4 and all(c > 0 for c in calls)  # every step degraded y
    train(TrainConfig(**{**cfg.__dict__, "steps": 2}), part, progress=False)
    (part / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1), encoding="utf-8")
    train(cfg, part, resume=True, progress=False)
    assert calls[4:] == calls[:4]  # the same degradations, before and after the resume
    a = load_file(str(full / "final" / "svi_lora.safetensors"))
    b = load_file(str(part / "final" / "svi_lora.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(x)["loss"] for x in (r / "log.jsonl").open()] for r in (full, part)]
    assert losses[0] == losses[1]
    saved = json.loads((full / "config.json").read_text(encoding="utf-8"))
    assert saved["augment"]["p_blur"] == 1.0 and saved["erft"] is None


def test_resume_accepts_a_run_config_written_before_a_key_existed(tmp_path: Path) -> None:
    """A run started before ``augment`` existed (its config.json lacks the key) resumes."""
    from svi.train import _write_config

    stored = SMALL.to_dict()
    del stored["augment"]
    (tmp_path / "config.json").write_text(json.dumps(stored, indent=1), encoding="utf-8")
    _write_config(tmp_path, SMALL, resume=True)  # no error: the missing key is its default
    stored["steps"] = 99
    (tmp_path / "config.json").write_text(json.dumps(stored, indent=1), encoding="utf-8")
    with pytest.raises(SviError, match="differs"):
        _write_config(tmp_path, SMALL, resume=True)


def test_two_processes_share_errors_so_banks_agree(tiny_base: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): with share_errors=always both banks match."""
    import os
    import shutil
    import subprocess
    import sys

    recipe = tmp_path / "mp.toml"
    recipe.write_text(
        f'init = "{tiny_base}"\nsteps = 4\nbatch_size = 2\nlora_rank = 4\nlora_alpha = 4\n'
        "checkpoint_every = 4\nlog_every = 1\n"
        '[erft]\nnum_bins = 5\ncapacity = 3\nshare_errors = "always"\n'
        "[data]\npool_size = 4\nepisode_frames = 12\n",
        encoding="utf-8",
    )
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    run = tmp_path / "run"
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "svi.cli", "train", "--recipe", str(recipe),
           "--out", str(run), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = list_checkpoints(run)[-1]
    layout = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))["processes"]
    assert (layout["distributed_type"], layout["world_size"]) == ("MULTI_CPU", 2)
    a = load_file(str(ckpt / "extra.safetensors"))
    b = load_file(str(ckpt / "extra-rank1.safetensors"))
    # same stored errors; the banks' sampling RNGs advance with each process's own coins
    keys = [k for k in a if k.startswith("bank.") and not k.endswith("generator")]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)
    assert int(a["bank.video.count"].sum()) > 4  # errors of both processes were banked
    assert not torch.equal(a["torch_generator"], b["torch_generator"])  # own data and noise


def test_training_from_a_dataset_folder(tmp_path: Path) -> None:
    """Real-video path: the reference CSV layout (written here by the world) feeds training."""
    from svi.clips import FolderClips
    from svi.world.files import write_dataset

    root = tmp_path / "data"
    write_dataset(root, "creative", videos=2, seconds=2.0)
    clips = FolderClips(root, num_frames=5, height=32, width=32)
    batch = clips.sample(3, np.random.default_rng(0), 2)
    assert batch.frames.shape == (3, 3, 5, 32, 32) and len(batch.prompts) == 3
    assert all(p.strip() and "|" not in p for p in batch.prompts)
    cfg = TrainConfig(**{**SMALL.__dict__, "steps": 2, "data": DataConfig(source=str(root))})
    final = train(cfg, tmp_path / "run", progress=False)
    assert (final / "transformer" / "config.json").exists()


@pytest.mark.parametrize("crash_at", [4, 6])
def test_resumed_logs_equal_an_uninterrupted_runs_logs(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """A run that crashed between logging and checkpointing, resumed, leaves log.jsonl and
    banks.jsonl line for line as a run that never stopped (timing fields aside): lines
    after the checkpoint are dropped and the losses not yet logged come back with it."""
    import svi.train

    cfg = _lora_config(True, str(tiny_base), steps=6, checkpoint_every=2, log_every=3)
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg, full, progress=False)
    real = svi.train._checkpoint

    def crash(accelerator, out, step, *args, **kwargs):
        if step == crash_at:
            raise RuntimeError("simulated crash")
        real(accelerator, out, step, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(svi.train, "_checkpoint", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            train(cfg, part, progress=False)
    train(cfg, part, resume=True, progress=False)

    def lines(run: Path, name: str) -> list[dict]:
        """The records without what belongs to the process, not the run: timing, and the
        banks' allocated bytes (their growth slack differs after a restore)."""
        records = [json.loads(x) for x in (run / name).read_text(encoding="utf-8").splitlines()]
        for r in records:
            for key in ("steps_per_s", "elapsed_s", "noise", "video"):
                value = r.pop(key, None)
                if isinstance(value, dict):
                    r[key] = {k: v for k, v in value.items() if k != "bytes"}
        return records

    for name in ("log.jsonl", "banks.jsonl"):
        assert lines(part, name) == lines(full, name), name
    assert [r["step"] for r in lines(full, "log.jsonl")] == [3, 6]


def test_overrides_take_dotted_keys_and_validate_as_a_recipe() -> None:
    from svi.config import ErftConfig, lora_defaults, with_overrides

    cfg = with_overrides(SMALL, {"optim.lr": 0.5, "data.source": "videos"}, steps=9, erft=True)
    assert (cfg.optim.lr, cfg.data.source, cfg.steps) == (0.5, "videos", 9)
    assert cfg.erft == ErftConfig() and cfg.optim.warmup_steps == SMALL.optim.warmup_steps
    custom = with_overrides(cfg, {"erft.capacity": 7}, erft=True)  # an [erft] table is kept
    assert custom.erft == ErftConfig(capacity=7)
    assert with_overrides(custom, erft=False).erft is None
    assert with_overrides(cfg, steps=None, seed=None) == cfg  # None: not given
    with pytest.raises(SviError, match=r"optim\.lr must be a finite number"):
        with_overrides(SMALL, {"optim.lr": float("nan")})
    with pytest.raises(SviError, match="height must be an integer >= 1"):
        with_overrides(SMALL, height=-16)
    lora = lora_defaults(erft=True)
    assert lora.lora_rank == 16 and lora.erft == ErftConfig() and lora.optim.lr == 1e-4
    assert lora_defaults().erft is None


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"erft": {"spatial_pool": 0}}, "erft.spatial_pool must be an integer >= 1"),
        ({"erft": {"max_bytes": -5}}, "erft.max_bytes must be an integer >= 1"),
        ({"erft": {"replacement": "lru"}}, "erft.replacement must be one of l2, random, fifo"),
        ({"data": {"padding": "mirror"}}, "data.padding must be one of"),
        ({"data": {"crop_min_scale": 0.0}}, r"data.crop_min_scale must be in \(0, 1\]"),
        ({"data": {"random_crop": 1}}, "data.random_crop must be bool"),
        ({"data": {"padding_mix": ["last", "mirror"]}}, "data.padding_mix entries must be"),
        ({"loss_frames": "given"}, "loss_frames must be one of all, generated"),
        ({"weighting": "snr"}, "weighting must be one of none, bell, x0"),
        ({"steps": 10**10}, "steps must be at most 1000000000"),  # library callers too
        ({"lora_rank": 5000}, "lora_rank must be at most 4096"),
        ({"dit": {"depth": 6}}, "unknown key dit.depth; known: num_layers"),
        ({"dit": {"num_layers": 0}}, "dit.num_layers must be an integer >= 1"),
        ({"dit": {"patch_size": [1, 2]}}, r"dit.patch_size must be 3 integers"),
    ],
)
def test_replay_memory_and_data_keys_are_validated(table: dict, says: str) -> None:
    from svi.config import from_dict

    with pytest.raises(SviError, match=says):
        from_dict(TrainConfig, table)


def test_resolve_config_fills_the_models_defaults_once() -> None:
    """Unset preset, clip size and conditioning format come from the model; resolving
    twice changes nothing, and a world model keeps its clip size."""
    from svi import config as config_module
    from svi.config import from_dict
    from svi.erft import bank
    from svi.train import resolve_config

    cfg = resolve_config(SMALL)
    assert (cfg.preset, cfg.height, cfg.width, cfg.num_frames) == ("world-tiny", 32, 32, 5)
    assert (cfg.data.motion_frames, cfg.data.padding, cfg.data.mask) == (2, "last", "motion")
    assert resolve_config(cfg) == cfg and from_dict(TrainConfig, cfg.to_dict()) == cfg
    assert resolve_config(TrainConfig(init="world-tiny")).init == "embedded"
    with pytest.raises(SviError, match="clip size is fixed"):
        resolve_config(TrainConfig(height=64))
    with pytest.raises(SviError, match="needs its weights"):
        resolve_config(TrainConfig(init="wan2.1-i2v-14b-480p"))
    with pytest.raises(SviError, match="neither a preset nor an existing folder"):
        resolve_config(TrainConfig(init="/no/such/model"))
    assert config_module.REPLACEMENTS == bank.REPLACEMENTS  # svi.config keeps a copy


def test_generated_loss_frames_average_only_the_frames_y_does_not_give() -> None:
    from svi.train import _loss

    gen = torch.Generator().manual_seed(3)
    v, target = torch.randn(2, 3, 5, 4, 4, generator=gen), torch.randn(2, 3, 5, 4, 4, generator=gen)
    y = torch.zeros(2, 7, 5, 4, 4)
    y[0, :4, :2] = 1  # sample 0: 2 given frames; sample 1: 1 given frame
    y[1, :4, :1] = 1
    sigma = torch.tensor([0.5, 0.5])
    per_frame = ((v - target) ** 2).mean(dim=(1, 3, 4))  # (2, 5)
    want = (per_frame[0, 2:].mean() + per_frame[1, 1:].mean()) / 2
    got = _loss(v, target, sigma, y, TrainConfig(loss_frames="generated"))
    torch.testing.assert_close(got, want)
    everything = _loss(v, target, sigma, y, TrainConfig())
    torch.testing.assert_close(everything, ((v - target) ** 2).mean())


def test_x0_weighting_is_the_error_of_the_implied_clean_clip() -> None:
    from svi.train import _loss

    gen = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(2, 3, 5, 4, 4, generator=gen), torch.randn(2, 3, 5, 4, 4, generator=gen)
    sigma = torch.tensor([0.2, 0.9])
    x_t, target = flow.interpolate(x0, noise, sigma), flow.velocity_target(x0, noise)
    v = target + 0.1 * torch.randn(target.shape, generator=gen)
    x0_hat = x_t - sigma.view(-1, 1, 1, 1, 1) * v
    got = _loss(v, target, sigma, torch.zeros(2, 7, 5, 4, 4), TrainConfig(weighting="x0"))
    torch.testing.assert_close(got, ((x0_hat - x0) ** 2).mean())


def test_dit_sizes_train_export_and_reload_at_those_sizes(tmp_path: Path) -> None:
    from svi.models.bundle import load_bundle
    from svi.train import checkpoint_model

    dit = {"num_layers": 1, "num_attention_heads": 2, "patch_size": [1, 2, 2]}
    cfg = TrainConfig(**{**SMALL.__dict__, "steps": 2, "dit": dit, "loss_frames": "generated",
                         "data": DataConfig(pool_size=4, episode_frames=12,
                                            padding_mix=("last", "anchor", "zeros"))})  # fmt: skip
    final = train(cfg, tmp_path / "run", progress=False)
    for bundle in (load_bundle(final), checkpoint_model(list_checkpoints(tmp_path / "run")[-1])):
        config = bundle.transformer.config
        assert (config.num_layers, config.num_attention_heads) == (1, 2)
        assert tuple(config.patch_size) == (1, 2, 2)
        assert tuple(bundle.preset.transformer["patch_size"]) == (1, 2, 2)
    meta = json.loads((final / "svi_model.json").read_text())
    assert meta["preset"]["transformer"]["num_layers"] == 1


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"init": "embedded", "dit": {"num_layers": 2}}, "a fine-tune keeps its model's sizes"),
        ({"dit": {"patch_size": [1, 3, 3]}}, "must be \\[1, h, w\\] with h and w dividing"),
        ({"dit": {"patch_size": [2, 4, 4]}}, "must be \\[1, h, w\\]"),
    ],
)
def test_dit_sizes_are_refused_where_they_cannot_apply(kw: dict, says: str) -> None:
    from svi.train_setup import resolve_config

    with pytest.raises(SviError, match=says):
        resolve_config(TrainConfig(**kw))


def test_an_x0_residual_dit_that_outputs_zero_copies_the_conditioning_video() -> None:
    """x0-residual: the DiT's output is the clean clip minus y's video, so a DiT that
    outputs 0 samples exactly y's video (the given frames and their padding)."""
    from dataclasses import replace as dc_replace

    from svi.models.bundle import build_world_transformer
    from svi.models.presets import get_preset
    from svi.sampling import residual_velocity, sample_latents

    preset = dc_replace(get_preset("world-tiny"), prediction="x0-residual")
    model = build_world_transformer(preset)
    torch.nn.init.zeros_(model.proj_out.weight)
    torch.nn.init.zeros_(model.proj_out.bias)
    gen = torch.Generator().manual_seed(0)
    y = torch.cat([torch.ones(1, 4, 5, 32, 32), torch.rand(1, 3, 5, 32, 32, generator=gen)], 1)
    noise, text = torch.randn(1, 3, 5, 32, 32, generator=gen), torch.zeros(1, 48, 384)
    velocity = Experts(model, prediction=preset.prediction)
    x = sample_latents(velocity, noise, y, text, steps=4, shift=3.0)
    torch.testing.assert_close(x, y[:, 4:], atol=1e-5, rtol=0)
    # and the velocity it implies is flow matching's: x_t - sigma v = x0
    sigma = torch.tensor([0.4])
    x_t = flow.interpolate(y[:, 4:], noise, sigma)
    v = residual_velocity(torch.zeros_like(noise), x_t, sigma, y)
    torch.testing.assert_close(v, flow.velocity_target(y[:, 4:], noise))


def test_prediction_is_trained_exported_and_reloaded(tmp_path: Path) -> None:
    from svi.models.bundle import load_bundle
    from svi.train import checkpoint_model
    from svi.train_setup import resolve_config

    cfg = TrainConfig(**{**SMALL.__dict__, "steps": 2, "prediction": "x0-residual",
                         "weighting": "x0"})  # fmt: skip
    final = train(cfg, tmp_path / "run", progress=False)
    for bundle in (load_bundle(final), checkpoint_model(list_checkpoints(tmp_path / "run")[-1])):
        assert bundle.preset.prediction == "x0-residual"
        assert bundle.experts.prediction == "x0-residual"
    assert load_bundle("world-tiny").experts.prediction == "velocity"  # shipped: unchanged
    with pytest.raises(SviError, match="prediction must be one of velocity, x0-residual"):
        TrainConfig(prediction="eps")
    with pytest.raises(SviError, match="a fine-tune keeps its model's"):
        resolve_config(TrainConfig(init="embedded", prediction="x0-residual"))


def test_a_world_model_from_scratch_may_choose_its_clip_length(tmp_path: Path) -> None:
    from svi.models.bundle import load_bundle
    from svi.train_setup import resolve_config

    data = DataConfig(pool_size=2, episode_frames=12, motion_frames=3)
    cfg = TrainConfig(**{**SMALL.__dict__, "steps": 1, "num_frames": 7, "data": data})
    bundle = load_bundle(train(cfg, tmp_path / "run", progress=False))
    p = bundle.preset
    assert (p.num_frames, p.motion_frames, p.stream_motion_frames) == (7, 3, 3)
    from svi.request import GenerateRequest, run_generate

    out = tmp_path / "v.mp4"
    manifest = run_generate(GenerateRequest(out=out, model=str(tmp_path / "run" / "final"),
                                            clips=2, progress=False, lossless=True))  # fmt: skip
    assert manifest["frames_written"] == 3 + 2 * 4  # 3 carried, 4 new per clip
    with pytest.raises(SviError, match="clip size is fixed"):  # a fine-tune keeps it
        resolve_config(TrainConfig(init="embedded", num_frames=7))
    with pytest.raises(SviError, match=r"from scratch: 3\.\.17 frames"):
        resolve_config(TrainConfig(num_frames=40))
