"""Auto re-roll (--reroll / --max-rerolls): scores, the kept try, manifest, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svi.errors import SviError
from svi.pipeline import SVIPipeline
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, run_generate
from svi.reroll import clip_scores, score
from svi.video import read_video
from test_session import _crash_after
from world_fixtures import build_tiny_world_model


def test_scores_measure_the_jump_from_the_carried_frames() -> None:
    rng = np.random.default_rng(0)
    carried = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    clip = np.concatenate([carried, carried[-1:].repeat(3, 0)])
    assert clip_scores(clip, carried)["seam"] == 0.0
    brighter = np.clip(clip.astype(int) + 51, 0, 255).astype(np.uint8)
    s = clip_scores(brighter, carried)
    assert 0.1 < s["seam"] <= 0.2 and 0.1 < s["colour"] <= np.sqrt(3) * 0.2
    assert score(s) == max(s.values())


@pytest.mark.parametrize(
    ("kw", "says"),
    [({"max_rerolls": 2}, "--max-rerolls needs --reroll"),
     ({"reroll": 0.0}, "--reroll must be a finite number in"),
     ({"reroll": 0.1, "max_rerolls": 0}, "--max-rerolls must be in 1..100")],
)  # fmt: skip
def test_settings_are_checked(kw: dict, says: str) -> None:
    pipe = SVIPipeline.from_pretrained()
    with pytest.raises(SviError, match=says):
        pipe.plan(GenerationConfig(**kw), ["a"])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("model") / "tiny")


def _request(model: Path, out: Path, **kw) -> GenerateRequest:
    config = GenerationConfig(steps=2, seed=3, reroll=kw.pop("reroll", None),
                              max_rerolls=kw.pop("max_rerolls", None))  # fmt: skip
    return GenerateRequest(out=out, model=str(model), progress=False, lossless=True,
                           config=config, clips=4, **kw)  # fmt: skip


def test_every_try_is_recorded_and_the_best_one_kept(model: Path, tmp_path: Path) -> None:
    # an unreachable threshold: every clip takes all 1 + 2 tries and keeps the lowest score
    manifest = run_generate(_request(model, tmp_path / "a.mp4", reroll=1e-9, max_rerolls=2))
    for k, clip in enumerate(manifest["clips"]):
        tries = clip["tries"]
        assert [t["seed"] for t in tries] == [3 + 42 * k + r for r in range(3)]
        kept = [t for t in tries if t["kept"]]
        assert len(kept) == 1 and clip["seed"] == kept[0]["seed"]
        scores = [max(t["seam"], t["colour"]) for t in tries]
        assert max(kept[0]["seam"], kept[0]["colour"]) == min(scores)
    # a threshold every clip meets: one try each, the plain seeds, the plain video
    easy = run_generate(_request(model, tmp_path / "b.mp4", reroll=1.0))
    plain = run_generate(_request(model, tmp_path / "c.mp4"))
    assert [len(c["tries"]) for c in easy["clips"]] == [1] * 4
    assert "tries" not in plain["clips"][0]
    assert np.array_equal(read_video(tmp_path / "b.mp4"), read_video(tmp_path / "c.mp4"))


def test_resume_re_rolls_as_the_uninterrupted_run(model: Path, tmp_path: Path, monkeypatch):
    ref = tmp_path / "ref.mp4"
    run_generate(_request(model, ref, reroll=1e-9, max_rerolls=1))
    out = tmp_path / "out.mp4"
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            run_generate(_request(model, out, reroll=1e-9, max_rerolls=1))
    manifest = run_generate(_request(model, out, reroll=1e-9, max_rerolls=1, resume=True))
    assert manifest["status"] == "complete"
    assert np.array_equal(read_video(out), read_video(ref))
