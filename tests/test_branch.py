"""Branch from clip k (svi ui): a new session keeps clips < k and continues with new
settings; with the source's own settings it reproduces the source exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from svi.branch import branch
from svi.errors import SviError
from svi.manifest import manifest_path, state_dir
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, run_generate
from svi.session import Hooks
from svi.video import read_video
from world_fixtures import build_tiny_world_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("model") / "tiny")


def _request(model: Path, out: Path, seed: int = 1, **kw) -> GenerateRequest:
    return GenerateRequest(out=out, model=str(model), progress=False, lossless=True,
                           config=GenerationConfig(steps=2, seed=seed), clips=5, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def source(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("src") / "src.mp4"
    seen = []
    run_generate(
        _request(model, out),
        Hooks(keep_states=True, on_clip=lambda rec, clip: seen.append(rec["index"])),
    )
    assert seen == [0, 1, 2, 3, 4]
    assert len(list(state_dir(out).iterdir())) == 5  # every clip's state kept
    return out


def test_branch_with_the_same_settings_reproduces_the_source(model, source, tmp_path) -> None:
    out = tmp_path / "same.mp4"
    manifest = branch(source, 2, _request(model, out))
    assert np.array_equal(read_video(out), read_video(source))
    assert manifest["branch"] == {"source": str(source), "clip": 2}
    assert [c["index"] for c in manifest["clips"]] == [0, 1, 2, 3, 4]
    assert "prompt" in manifest["clips"][0] and "prompt_index" in manifest["clips"][2]


def test_branch_with_a_new_seed_keeps_the_clips_before_k(model, source, tmp_path) -> None:
    out = tmp_path / "new.mp4"
    manifest = branch(source, 2, _request(model, out, seed=77))
    old, new = read_video(source), read_video(out)
    assert len(new) == len(old) == 5 * 3 + 2
    assert np.array_equal(new[:6], old[:6])  # clips 0 and 1: 3 frames each
    assert not np.array_equal(new[6:], old[6:])
    assert [c["seed"] for c in manifest["clips"]] == [1, 43, 77 + 84, 77 + 126, 77 + 168]
    assert json.loads(manifest_path(source).read_text())["status"] == "complete"  # untouched


@pytest.mark.parametrize(
    ("clip", "change", "says"),
    [(0, {}, r"branch from a clip in 1\.\.5"),
     (6, {}, r"branch from a clip in 1\.\.5"),
     (2, {"world_seed": 900003}, "keeps its source's start image"),
     (2, {"clips": 2}, "more than the 2 it keeps")],
)  # fmt: skip
def test_bad_branches_are_refused(model, source, tmp_path, clip, change, says) -> None:
    out = tmp_path / "bad.mp4"
    kw = {"clips": change.pop("clips")} if "clips" in change else {}
    req = _request(model, out, **change)
    if kw:
        from dataclasses import replace

        req = replace(req, **kw)
    with pytest.raises(SviError, match=says):
        branch(source, clip, req)
    assert not out.exists()


def test_a_session_without_kept_states_cannot_branch(model, tmp_path) -> None:
    src = tmp_path / "plain.mp4"
    run_generate(_request(model, src))
    with pytest.raises(SviError, match="kept no state after clip 1"):
        branch(src, 2, _request(model, tmp_path / "b.mp4"))
