"""VideoFolderDataset: the reference <category>/<category>.csv layout and hostile CSVs."""

from __future__ import annotations

import os

import pytest

from svi.data import VideoFolderDataset, VideoRecord
from svi.errors import SviError

HEADER = "Video Title,Video Description,Video URL,Download URL,Filename\n"


def make_category(root, name, rows, header=HEADER, files=(), encoding="utf-8"):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_bytes(b"not really a video")
    text = header + "".join(row + "\n" for row in rows)
    (folder / f"{name}.csv").write_bytes(text.encode(encoding))
    return folder


def test_reads_rows_extras_and_prompt_streams(tmp_path):
    folder = make_category(
        tmp_path,
        "walks",
        [
            'Walk,"a dog walks | the dog sits",http://x,http://y,walk.mp4',
            ",a cat sleeps,,,sub/cat.mp4",
            ",,,,",
        ],
        files=["walk.mp4", "sub/cat.mp4", "walk.wav", "walk_pose.mp4", "walk_truth.npz"],
    )
    make_category(tmp_path, "runs", ["Run,a horse runs,,,run.mp4"], files=["run.mp4"])
    (tmp_path / "stray").mkdir()  # no CSV: not a category
    dataset = VideoFolderDataset(tmp_path)
    assert dataset.categories == ["runs", "walks"] and len(dataset) == 3
    walk = dataset[1]
    assert isinstance(walk, VideoRecord)
    assert walk.path == folder / "walk.mp4" and walk.title == "Walk" and walk.category == "walks"
    assert walk.prompt == "a dog walks | the dog sits"
    assert walk.prompts == ["a dog walks", "the dog sits"]
    assert walk.extras == {
        "audio": folder / "walk.wav",
        "pose": folder / "walk_pose.mp4",
        "truth": folder / "walk_truth.npz",
    }
    cat = dataset[-1]
    assert cat.title == "cat" and cat.extras == {} and cat.prompts == ["a cat sleeps"]
    assert [r.category for r in dataset] == ["runs", "walks", "walks"]


def test_tolerates_a_bom_and_minimal_columns(tmp_path):
    make_category(
        tmp_path,
        "a",
        ["a red ball,x.mp4"],
        header="Video Description,Filename\n",
        encoding="utf-8-sig",
    )
    (tmp_path / "a" / "x.mp4").write_bytes(b"v")
    dataset = VideoFolderDataset(tmp_path, categories=["a"])
    assert dataset[0].prompt == "a red ball" and dataset[0].title == "x"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("T,d,,,missing.mp4", "row 3: video file not found"),
        ("T,d,,,../outside.mp4", "row 3: Filename '../outside.mp4' escapes"),
        ("T,d,,,sub/../../outside.mp4", "row 3: Filename 'sub/../../outside.mp4' escapes"),
        ("T,d,,,/etc/passwd", "row 3: Filename '/etc/passwd' is an absolute path"),
        ("T,d,,,C:\\videos\\a.mp4", "is an absolute path"),
        ("T,d,,,", "row 3: empty Filename"),
    ],
)
def test_hostile_rows_name_the_csv_and_row(tmp_path, row, message):
    (tmp_path / "outside.mp4").write_bytes(b"v")
    make_category(tmp_path / "root", "c", ["ok,d,,,ok.mp4", row], files=["ok.mp4"])
    with pytest.raises(SviError, match=r"c\.csv") as info:
        VideoFolderDataset(tmp_path / "root")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_escaping_the_folder_is_rejected(tmp_path):
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"v")
    folder = make_category(tmp_path / "root", "c", ["T,d,,,link.mp4"])
    (folder / "link.mp4").symlink_to(secret)
    with pytest.raises(SviError, match=r"row 2: Filename 'link.mp4' resolves outside"):
        VideoFolderDataset(tmp_path / "root")
    inside = folder / "real.mp4"
    inside.write_bytes(b"v")
    (folder / "link.mp4").unlink()
    (folder / "link.mp4").symlink_to(inside)
    assert VideoFolderDataset(tmp_path / "root")[0].path == folder / "link.mp4"


def test_missing_column_is_rejected(tmp_path):
    make_category(tmp_path, "c", ["T,d,x.mp4"], header="Video Title,Video Description,File\n")
    with pytest.raises(SviError, match=r"c\.csv, row 1: missing column\(s\) Filename"):
        VideoFolderDataset(tmp_path)


def test_non_utf8_csv_is_rejected(tmp_path):
    make_category(tmp_path, "c", ["T,caf\xe9 scene,,,x.mp4"], files=["x.mp4"], encoding="latin-1")
    with pytest.raises(SviError, match=r"c\.csv, line 2: not UTF-8"):
        VideoFolderDataset(tmp_path)


def test_missing_root_category_or_csv(tmp_path):
    with pytest.raises(SviError, match="not found"):
        VideoFolderDataset(tmp_path / "nope")
    with pytest.raises(SviError, match="no <category>"):
        VideoFolderDataset(tmp_path)
    make_category(tmp_path, "c", ["T,d,,,x.mp4"], files=["x.mp4"])
    with pytest.raises(SviError, match="has no CSV"):
        VideoFolderDataset(tmp_path, categories=["c", "d"])
