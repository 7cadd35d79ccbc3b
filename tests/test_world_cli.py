"""``svi world`` commands: render, dataset, contact-sheet, and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svi.cli import main
from svi.data import VideoFolderDataset
from svi.world import GroundTruth, render_episode
from svi.world.files import read_wav

EXPECTED = {
    "consistent": {"video.mp4", "prompts.txt", "truth.npz", "truth.json"},
    "creative": {"video.mp4", "prompts.txt", "truth.npz", "truth.json"},
    "talking": {"video.mp4", "prompts.txt", "truth.npz", "truth.json", "audio.wav"},
    "dancing": {"video.mp4", "prompts.txt", "truth.npz", "truth.json", "pose.mp4"},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_render_writes_every_file(kind, tmp_path):
    out = tmp_path / kind
    args = ["world", "render", "--kind", kind, "--seed", "3", "--seconds", "2", "--out", str(out)]
    assert main([*args, "--clip-frames", "4"]) == 0
    assert {p.name for p in out.iterdir()} == EXPECTED[kind]
    prompts = (out / "prompts.txt").read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 4  # 16 frames in clips of 4
    truth = GroundTruth.load(out)
    assert truth.num_frames == 16 and truth.meta["prompts"] == prompts
    info = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    assert {"names", "ids", "colours", "prompts", "split", "config"} <= set(info)
    if kind == "talking":
        audio, rate = read_wav(out / "audio.wav")
        assert rate == 16_000 and len(audio) == 2 * 16_000


def test_rendered_video_decodes_to_the_frames(tmp_path):
    from svi.video import read_video

    assert (
        main(["world", "render", "--kind", "consistent", "--seconds", "1", "--out", str(tmp_path)])
        == 0
    )
    frames = read_video(tmp_path / "video.mp4")
    expected = render_episode("consistent", 0, 8).frames
    assert frames.shape == expected.shape
    assert np.abs(frames.astype(int) - expected).mean() < 12  # lossy codec, same picture


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "juggling", "--seconds", "1"], "unknown world kind"),
        (["--kind", "talking", "--seconds", "-2"], "--seconds"),
        (["--kind", "talking", "--seconds", "1", "--seed", "-4"], "seed"),
        (["--kind", "talking", "--seconds", "1", "--size", "8"], "size"),
    ],
)
def test_render_errors_are_one_line(args, message, tmp_path, capsys):
    assert main(["world", "render", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_unwritable_out_is_an_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(
        ["world", "render", "--kind", "consistent", "--seconds", "1", "--out", str(blocker / "sub")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]


def test_dataset_round_trip(tmp_path):
    root = tmp_path / "data"
    for kind in ("dancing", "talking", "creative"):
        args = ["world", "dataset", "--out", str(root), "--videos", "2", "--kind", kind]
        assert main([*args, "--seconds", "2", "--split", "val"]) == 0
    header = (root / "dancing" / "dancing.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "Video Title,Video Description,Video URL,Download URL,Filename"
    dataset = VideoFolderDataset(root)
    assert len(dataset) == 6 and dataset.categories == ["creative", "dancing", "talking"]
    by_category = {}
    for record in dataset:
        by_category.setdefault(record.category, []).append(record)
        assert record.path.is_file() and record.path.suffix == ".mp4"
        seed = int(record.title.split("_")[1])
        episode = render_episode(record.category, seed, 16)
        assert episode.split == "val"
        assert record.prompts[0] == episode.prompt
        assert {"truth", "truth_json", "prompts"} <= set(record.extras)
    assert all("pose" in r.extras for r in by_category["dancing"])
    assert all("audio" in r.extras for r in by_category["talking"])
    assert all(len(r.prompts) == 2 for r in by_category["creative"])
    subset = VideoFolderDataset(root, categories=["talking"])
    assert len(subset) == 2 and subset[0].category == "talking"


def test_dataset_rejects_bad_arguments(tmp_path, capsys):
    args = ["world", "dataset", "--out", str(tmp_path), "--kind", "consistent"]
    assert main([*args, "--videos", "0"]) == 2
    assert main([*args, "--videos", "1", "--split", "dev"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error:") for line in lines)


def test_contact_sheet(tmp_path):
    from PIL import Image

    out = tmp_path / "sheet.png"
    assert (
        main(["world", "contact-sheet", "--kind", "dancing", "--seconds", "2", "--out", str(out)])
        == 0
    )
    with Image.open(out) as image:
        assert image.size == (8 * 32 * 4, 2 * 2 * 32 * 4)  # 16 frames + their poses
