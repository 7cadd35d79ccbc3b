"""The clip loop: frame counts, seeds, prompts, hand-offs, length rules."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from svi.errors import SviError
from svi.models.bundle import shipped_lora
from svi.pipeline import GenerationConfig, SVIPipeline, rollout
from svi.plan import clips_for_length
from svi.starts import fit_image, world_start
from world_fixtures import build_tiny_world_model, random_lora


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> SVIPipeline:
    return SVIPipeline.from_pretrained(build_tiny_world_model(tmp_path_factory.mktemp("m") / "m"))


@pytest.fixture(scope="module")
def start(pipe: SVIPipeline) -> np.ndarray:
    return world_start(pipe.bundle.preset)[0]


@pytest.mark.parametrize("handoff", ["pixel", "latent"])
@pytest.mark.parametrize(("n", "m"), [(1, 2), (4, 2), (3, 1), (2, 4)])
def test_exact_frame_count(pipe, start, handoff: str, n: int, m: int) -> None:
    video, clips = rollout(pipe, start, ["a red disc"], GenerationConfig(
        clips=n, motion_frames=m, handoff=handoff))  # fmt: skip
    f = pipe.bundle.preset.num_frames
    assert video.shape == (n * (f - m) + m, 32, 32, 3)
    assert video.dtype == np.uint8
    assert [c.index for c in clips] == list(range(n))


def test_stitching_keeps_regenerated_frames(pipe, start) -> None:
    video, clips = rollout(pipe, start, ["x"], GenerationConfig(clips=3, motion_frames=2))
    f, m = pipe.bundle.preset.num_frames, 2
    expected = np.concatenate([c.frames[: f - m] for c in clips] + [clips[-1].frames[f - m :]])
    assert np.array_equal(video, expected)


def test_pixel_handoff_carries_decoded_frames(pipe, start) -> None:
    _, clips = rollout(pipe, start, ["x"], GenerationConfig(clips=2, motion_frames=2))
    assert np.array_equal(clips[0].carry.frames, clips[0].frames[-2:])
    assert clips[0].carry.latents is None
    _, lat = rollout(pipe, start, ["x"], GenerationConfig(clips=2, motion_frames=2,
                                                          handoff="latent"))  # fmt: skip
    assert lat[0].carry.latents is not None and lat[0].carry.latents.shape[2] == 2


def test_seeds_differ_per_clip_and_are_reproducible(pipe, start) -> None:
    cfg = GenerationConfig(clips=3, seed=5)
    a, clips = rollout(pipe, start, ["x"], cfg)
    b, _ = rollout(pipe, start, ["x"], cfg)
    assert np.array_equal(a, b)
    assert [c.seed for c in clips] == [pipe.plan(cfg, ["x"]).clip_seed(k) for k in range(3)]
    assert [c.seed for c in clips] == [5, 5 + 42, 5 + 2 * 42]  # the released scripts: 42 k
    assert len({c.seed for c in clips}) == 3
    c, _ = rollout(pipe, start, ["x"], GenerationConfig(clips=3, seed=6))
    assert not np.array_equal(a, c)


def test_prompt_per_clip_and_first_only(pipe, start) -> None:
    stream = ["p0", "p1", "p2"]
    _, clips = rollout(pipe, start, stream, GenerationConfig(clips=5))
    assert [c.prompt for c in clips] == ["p0", "p1", "p2", "p2", "p2"]
    _, first = rollout(pipe, start, stream, GenerationConfig(clips=3, first_prompt_only=True))
    assert [c.prompt for c in first] == ["p0"] * 3


def test_text_embeddings_are_cached_per_prompt(pipe, start) -> None:
    enc = pipe.bundle.text_encoder
    rollout(pipe, start, ["cached prompt"], GenerationConfig(clips=3))
    before = enc.cache_info()
    rollout(pipe, start, ["cached prompt"], GenerationConfig(clips=3))
    assert enc.cache_info().misses == before.misses


def test_bad_settings(pipe, start) -> None:
    with pytest.raises(SviError, match="hand-off"):
        next(pipe.generate(start, ["x"], GenerationConfig(handoff="wormhole")))
    with pytest.raises(SviError, match="motion-frames"):
        next(pipe.generate(start, ["x"], GenerationConfig(motion_frames=5)))
    with pytest.raises(SviError, match="--steps"):
        next(pipe.generate(start, ["x"], GenerationConfig(steps=0)))  # not "the default"
    with pytest.raises(SviError, match="prompt"):
        next(pipe.generate(start, [], GenerationConfig()))


def test_clips_for_length() -> None:
    kw = dict(fps=8, num_frames=5, new_frames=3, n_prompts=1, default_seconds=32.0)
    assert clips_for_length(clips=7, seconds=None, frames=None, forever=False, **kw) == 7
    assert clips_for_length(clips=None, seconds=None, frames=None, forever=True, **kw) == 0
    # 32 s at 8 fps = 256 frames = N*3 + 2 -> N = 85 (ceil)
    assert clips_for_length(clips=None, seconds=None, frames=None, forever=False, **kw) == 85
    assert clips_for_length(clips=None, seconds=None, frames=11, forever=False, **kw) == 3
    assert clips_for_length(clips=None, seconds=None, frames=None, forever=False,
                            **{**kw, "n_prompts": 4}) == 4  # fmt: skip
    with pytest.raises(SviError, match="only one"):
        clips_for_length(clips=1, seconds=2.0, frames=None, forever=False, **kw)
    for bad in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(SviError, match="--seconds"):
            clips_for_length(clips=None, seconds=bad, frames=None, forever=False, **kw)
    with pytest.raises(SviError, match="--frames"):
        clips_for_length(clips=None, seconds=None, frames=-5, forever=False, **kw)
    with pytest.raises(SviError, match=r"--frames must be in 1\.\.1000000000"):
        clips_for_length(clips=None, seconds=None, frames=10**30, forever=False, **kw)


def test_a_length_shorter_than_one_clip_says_so(caplog) -> None:
    kw = dict(fps=8, num_frames=5, new_frames=3, n_prompts=1, default_seconds=32.0)
    with caplog.at_level("WARNING", logger="svi.plan"):
        assert clips_for_length(clips=None, seconds=1e-9, frames=None, forever=False, **kw) == 1
        assert clips_for_length(clips=None, seconds=None, frames=5, forever=False, **kw) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "--seconds 1e-09 is shorter than one clip: writing one clip of 5 frames (0.62 s)"
    ]  # 5 frames are one whole clip: nothing to say


def test_fit_image_crops_and_resizes() -> None:
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, 20:80] = 255  # the centre square survives the crop
    out = fit_image(img, 32, 32)
    assert out.shape == (32, 32, 3)
    assert out.mean() > 240


def test_lora_merge_changes_output(pipe, start, tmp_path: Path) -> None:
    from svi.lora import save_lora

    sd = random_lora(pipe.bundle.transformer)
    path = save_lora(tmp_path / "l.safetensors", sd, form="wan", metadata={"base": "test"})
    bundle = copy.copy(pipe.bundle)
    bundle.transformer = copy.deepcopy(pipe.bundle.transformer)
    fresh = SVIPipeline(bundle)
    before, _ = rollout(pipe, start, ["x"], GenerationConfig(clips=1))
    entry = fresh.load_lora(path, 0.5)
    after, _ = rollout(fresh, start, ["x"], GenerationConfig(clips=1))
    assert entry["modules"] == 1 and len(entry["sha256"]) > 8
    assert not np.array_equal(before, after)


def test_non_finite_output_stops_the_run(pipe, start) -> None:
    """A model that outputs NaN would give an all-black video; the guard stops it."""
    bundle = copy.copy(pipe.bundle)
    bundle.transformer = copy.deepcopy(pipe.bundle.transformer)
    with torch.no_grad():
        next(bundle.transformer.parameters()).fill_(float("nan"))
    with pytest.raises(SviError, match="clip 0: the sampler produced NaN/inf"):
        rollout(SVIPipeline(bundle), start, ["x"], GenerationConfig(clips=2))


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"cfg": float("inf")}, "--cfg"),
        ({"cfg": float("nan")}, "--cfg"),
        ({"shift": 0.0}, "--shift"),
        ({"steps": 0}, "--steps"),
        ({"steps": -2}, "--steps"),
        ({"motion_frames": 0}, "--motion-frames"),
        ({"motion_frames": 5}, "--motion-frames"),
        ({"padding": "bogus"}, "padding"),
        ({"handoff": "bogus"}, "hand-off"),
        ({"clips": -1}, "--clips"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_the_plan_refuses_bad_settings(pipe, setting: dict, match: str) -> None:
    with pytest.raises(SviError, match=match):
        pipe.plan(GenerationConfig(**setting), ["x"])


def test_the_plan_resolves_every_number(pipe) -> None:
    plan = pipe.plan(GenerationConfig(clips=4), ["x"])
    p = pipe.bundle.preset
    assert (plan.steps, plan.cfg, plan.shift, plan.padding) == (p.steps, p.cfg, p.shift, p.padding)
    assert plan.motion_frames == plan.carried_frames == p.motion_frames
    assert plan.total_frames == 4 * (p.num_frames - plan.carried_frames) + plan.carried_frames
    assert pipe.plan(GenerationConfig(clips=0), ["x"]).total_frames is None
    other = pipe.plan(GenerationConfig(clips=4, steps=3), ["x"])
    assert [k for k, v in plan.to_dict().items() if other.to_dict()[k] != v] == ["steps"]


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 1e30])
def test_absurd_lora_strength_is_refused(pipe, tmp_path: Path, scale: float) -> None:
    from svi.lora import save_lora

    path = save_lora(tmp_path / "l.safetensors", random_lora(pipe.bundle.transformer), form="wan")
    before = {k: v.clone() for k, v in pipe.bundle.transformer.state_dict().items()}
    with pytest.raises(SviError, match="strength"):
        pipe.load_lora(path, scale)
    after = pipe.bundle.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing merged


def test_lora_with_nan_weights_is_refused(pipe, tmp_path: Path) -> None:
    from svi.lora import save_lora

    sd = random_lora(pipe.bundle.transformer)
    next(iter(sd.values()))[0, 0] = float("nan")
    path = save_lora(tmp_path / "nan.safetensors", sd, form="diffusers")
    with pytest.raises(SviError, match="not finite"):
        pipe.load_lora(path)


def test_shipped_loras_by_short_name(tmp_path: Path) -> None:
    """`--lora clean` on an embedded model = its clean_lora.safetensors; a Wan-style
    unknown name stays a missing file."""
    from safetensors.torch import save_file

    from world_fixtures import build_tiny_world_model, random_lora

    folder = build_tiny_world_model(tmp_path / "m")
    pipe = SVIPipeline.from_pretrained(str(folder))
    save_file(random_lora(pipe.bundle.transformer), str(folder / "clean_lora.safetensors"))
    before = {k: v.clone() for k, v in pipe.bundle.transformer.state_dict().items()}
    entry = pipe.load_lora("clean")
    assert entry["path"] == str(folder / "clean_lora.safetensors")
    after = pipe.bundle.transformer.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert pipe.bundle.bundled_lora("../clean") is None
    # by short name or by the file's name (a result recorded in another checkout), in
    # the model's folder only
    assert shipped_lora(folder, "clean") == shipped_lora(folder, "clean_lora.safetensors")
    assert shipped_lora(folder, "clean_lora.safetensors") == folder / "clean_lora.safetensors"
    for bad in ("../clean", "../clean_lora.safetensors", "svi", "", "_lora.safetensors"):
        assert shipped_lora(folder, bad) is None, bad
    with pytest.raises((SviError, FileNotFoundError)):
        pipe.load_lora("nonexistent")


@pytest.mark.parametrize("handoff", ["pixel", "latent"])
def test_a_batch_of_videos_matches_each_video_alone(pipe, start, handoff: str) -> None:
    """generate_batch: video i is generate() with seed i and stream i - bit-exact for a
    batch of one; in a larger batch within the rounding of a batched matrix product."""
    starts = [start, np.ascontiguousarray(start[:, ::-1]), 255 - start]
    streams = [["a red disc"], ["a blue square", "a green ring"], ["x"]]
    seeds = [3, 50, 7]
    plan = pipe.plan(GenerationConfig(clips=3, handoff=handoff), ["a", "b"])
    batched = [[] for _ in starts]
    for out in pipe.generate_batch(starts, streams, plan, seeds):
        assert [c.index for c in out] == [out[0].index] * 3
        for part, clip in zip(batched, out, strict=True):
            part.append(clip)
    for i, (s, stream, seed) in enumerate(zip(starts, streams, seeds, strict=True)):
        alone = list(pipe.generate(s, stream, replace(plan, seed=seed)))
        assert [c.seed for c in alone] == [c.seed for c in batched[i]]
        assert [c.prompt for c in alone] == [c.prompt for c in batched[i]]
        diff = np.abs(np.stack([c.frames for c in alone]).astype(int)
                      - np.stack([c.frames for c in batched[i]]))  # fmt: skip
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01
        one = next(iter(pipe.generate_batch([s], [stream], plan, [seed])))[0]
        assert np.array_equal(one.frames, alone[0].frames)  # a batch of one: bit-exact


def test_a_batch_refuses_what_runs_one_video_at_a_time(pipe, start) -> None:
    plan = pipe.plan(GenerationConfig(clips=2), ["a"])
    with pytest.raises(SviError, match="as many prompt streams"):
        next(pipe.generate_batch([start, start], [["a"]], plan, [1, 2]))
    with pytest.raises(SviError, match="no re-roll"):
        next(pipe.generate_batch([start], [["a"]], pipe.plan(
            GenerationConfig(clips=2, reroll=0.1), ["a"]), [1]))  # fmt: skip
    with pytest.raises(SviError, match="at least one prompt"):
        next(pipe.generate_batch([start], [[]], plan, [1]))
