"""``svi train`` on a tiny real-class Wan folder and a dataset folder in the reference
layout, from the command line: flags, clip geometry, replay-memory bounds, exact resume,
short videos and random crops."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from svi.checkpoint import list_checkpoints
from svi.cli import main
from wan_fixtures import build_tiny_wan_folder

CLIP = ["--height", "32", "--width", "32", "--num-frames", "9"]
HEADER = "Video Title,Video Description,Video URL,Download URL,Filename\n"
LENGTHS = {"long.mp4": 14, "short.mp4": 5}  # frames; clips have 9


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wan_folder(tmp_path_factory.mktemp("wan"), "wan2.1-i2v-14b-480p")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two mp4s of 40x48 noise (a short one) and their CSV: root/walks/walks.csv."""
    from svi.video import write_video

    root = tmp_path_factory.mktemp("data")
    folder = root / "walks"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, frames in LENGTHS.items():
        write_video(folder / name, rng.integers(0, 256, (frames, 40, 48, 3), np.uint8), fps=8)
    rows = [
        "Long,a red disc bounces | the disc turns blue,,,long.mp4",
        "Short,a blue square,,,short.mp4",
    ]
    (folder / "walks.csv").write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def _train(wan: Path, dataset: Path, out: Path, *args: str) -> int:
    argv = ["train", "--model", str(wan), "--data", str(dataset), *CLIP, "--out", str(out),
            "--no-progress", *args]  # fmt: skip
    return main(argv)


def _lora(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "svi_lora.safetensors"))


def test_cli_trains_an_erft_lora_that_generate_loads(wan: Path, dataset: Path, tmp_path: Path):
    from PIL import Image

    from svi.lora import read_lora_metadata

    run = tmp_path / "run"
    assert _train(wan, dataset, run, "--erft", "--steps", "2", "--seed", "1") == 0
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert (config["preset"], config["init"]) == ("wan2.1-i2v-14b-480p", str(wan))
    assert (config["height"], config["width"], config["num_frames"]) == (32, 32, 9)
    assert config["lora_rank"] == 16 and config["erft"]["num_bins"] == 50  # built-in recipe
    data = config["data"]  # the Wan preset's conditioning format, as svi generate uses it
    assert (data["motion_frames"], data["padding"], data["mask"]) == (1, "anchor", "first")
    meta = read_lora_metadata(run / "final" / "svi_lora.safetensors")
    assert meta["erft"] is True and meta["training"]["num_frames"] == 9

    image, out = tmp_path / "start.png", tmp_path / "clip.mp4"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    argv = ["generate", "--model", str(wan), "--lora", str(run / "final" / "svi_lora.safetensors"),
            "--image", str(image), "--prompt", "a red disc", *CLIP, "--clips", "1",
            "--steps", "1", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads(out.with_name("clip.svi.json").read_text(encoding="utf-8"))
    (lora,) = manifest["inputs"]["loras"]
    assert lora["modules"] == 10 and lora["padding"] == "anchor"


RECIPE = """\
lora_rank = 4
ema_decay = 0.9
checkpoint_every = 1
log_every = 1
[optim]
warmup_steps = 1
[erft]
p_clean = 0.0
num_bins = 5
capacity = 50
spatial_pool = 2
max_bytes = 5760  # 3 errors per bin: 5 bins x 384 bytes (16 x 3 x 2 x 2 bf16) x 3
[data]
random_crop = true
crop_min_scale = 0.5
"""


def test_resume_after_one_of_two_steps_is_bit_identical(
    wan: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crashed after step 1 (its checkpoint written), resumed from the CLI: the same LoRA,
    log and banks as a run that never stopped; the banks hold pooled errors, 3 per bin."""
    import svi.train

    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    args = ("--recipe", str(recipe), "--steps", "2", "--batch-size", "2", "--lr", "1e-3")
    full, part = tmp_path / "full", tmp_path / "part"
    assert _train(wan, dataset, full, *args) == 0
    real = svi.train._checkpoint

    def crash(accelerator, out, step, *rest, **kw) -> None:
        if step == 2:
            raise RuntimeError("simulated crash")
        real(accelerator, out, step, *rest, **kw)

    with monkeypatch.context() as m:
        m.setattr(svi.train, "_checkpoint", crash)
        assert _train(wan, dataset, part, *args) == 1  # an internal error: exit 1
    assert [p.name for p in list_checkpoints(part)] == ["step-0000001"]
    assert _train(wan, dataset, part, *args, "--resume") == 0
    a, b = _lora(full), _lora(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = [[json.loads(x)["loss"] for x in (r / "log.jsonl").open()] for r in (full, part)]
    assert logs[0] == logs[1] and len(logs[0]) == 2
    ea = load_file(str(list_checkpoints(full)[-1] / "extra.safetensors"))
    eb = load_file(str(list_checkpoints(part)[-1] / "extra.safetensors"))
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    # the bounds reached the banks: capacity cut to fit max_bytes, errors stored 2x pooled
    assert int(ea["bank.video.capacity"]) == int(ea["bank.noise.capacity"]) == 3
    assert ea["bank.video.shape"].tolist() == [16, 3, 4, 4]  # one latent error (C, f, h, w)
    entries = [v for k, v in ea.items() if k.startswith("bank.video.bin.")]
    assert entries and all(v.shape[1] == 16 * 3 * 2 * 2 for v in entries)
    saved = json.loads((full / "config.json").read_text(encoding="utf-8"))
    assert saved["erft"]["spatial_pool"] == 2 and saved["erft"]["max_bytes"] == 5760
    assert saved["data"]["random_crop"] is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--height", "30"], "height 30 is not a multiple of 16"),
        (["--width", "40"], "width 40 is not a multiple of 16"),
        (["--num-frames", "8"], "num_frames must be 4k + 1"),
        (["--num-frames", "0"], "num_frames must be an integer >= 1"),
        (["--recipe", "{dir}/pool.toml"], "erft.spatial_pool 3 does not divide"),
        (["--recipe", "{dir}/bytes.toml"], "erft.max_bytes 1000 cannot hold one error per bin"),
        (["--preset", "world-tiny"], "holds a wan2.1-i2v-14b-480p model, not world-tiny"),
    ],
    ids=["height", "width", "frames-4k1", "frames-zero", "pool", "max-bytes", "preset"],
)
def test_bad_settings_are_one_line_exit_2_and_nothing_written(
    wan: Path, dataset: Path, tmp_path: Path, capsys, args: list[str], says: str
) -> None:
    (tmp_path / "pool.toml").write_text("[erft]\nspatial_pool = 3\n", encoding="utf-8")
    (tmp_path / "bytes.toml").write_text("[erft]\nmax_bytes = 1000\n", encoding="utf-8")
    before = sorted(tmp_path.iterdir())
    argv = ["train", "--model", str(wan), "--data", str(dataset), "--out", str(tmp_path / "run"),
            *CLIP, *[a.format(dir=tmp_path) for a in args]]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert sorted(tmp_path.iterdir()) == before  # no run folder


def test_a_short_video_repeats_its_last_frame(dataset: Path, caplog) -> None:
    from svi.clips import FolderClips

    clips = FolderClips(dataset, num_frames=9, height=32, width=32)
    short = next(i for i, r in enumerate(clips.dataset) if r.path.name == "short.mp4")
    with caplog.at_level(logging.DEBUG, logger="svi.clips"):
        for seed in range(6):  # both videos, several times
            clips.sample(2, np.random.default_rng(seed), 1)
        frames = clips._video(short)
    assert frames.shape == (9, 32, 32, 3) and clips.short == {short}
    assert all(np.array_equal(frames[k], frames[LENGTHS["short.mp4"] - 1]) for k in range(4, 9))
    assert not np.array_equal(frames[3], frames[4])
    records = [r for r in caplog.records if "short.mp4" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING", "DEBUG"]  # once per video


def test_random_crops_come_from_the_data_generator(dataset: Path) -> None:
    """Crops of the clip's aspect vary per sample, within the frame and the scale range,
    and the same generator state gives the same crops (so resume is exact)."""
    from svi.clips import FolderClips
    from svi.crop import largest_crop, random_crop

    assert largest_crop(40, 48, 32, 32) == (0, 4, 40, 40)
    rng = np.random.default_rng(0)
    boxes = [random_crop(40, 48, 32, 32, 0.5, rng) for _ in range(20)]
    assert len(set(boxes)) == 20
    for top, left, h, w in boxes:
        assert h == w and 20 <= h <= 40 and top + h <= 40 and left + w <= 48
    clips = FolderClips(dataset, num_frames=9, height=32, width=32, random_crop=0.5)
    first = clips.sample(4, np.random.default_rng(3), 1)
    again = clips.sample(4, np.random.default_rng(3), 1)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.anchors, again.anchors)
    assert first.frames.shape == (4, 3, 9, 32, 32) and first.anchors.shape == (4, 3, 32, 32)
