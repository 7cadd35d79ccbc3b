"""The procedural world: determinism, exact ground truth, physics, prompts, events, splits."""

from __future__ import annotations

import numpy as np
import pytest

from svi.errors import SviError
from svi.world import (
    KINDS,
    SPLITS,
    GroundTruth,
    ObjectState,
    SceneState,
    WorldConfig,
    describe,
    render_episode,
    split_of,
    split_seeds,
)
from svi.world.backgrounds import BackgroundSpec
from svi.world.palette import BACKGROUND_COLOURS, OBJECT_COLOURS


def assert_truth_matches_pixels(episode) -> None:
    """Inside masks[t, k] the frame is colours[t, k]; outside all masks it is background[t]."""
    truth, frames = episode.truth, episode.frames
    assert truth.masks.sum(axis=1).max(initial=0) <= 1, "visible masks overlap"
    for k in range(truth.num_objects):
        inside = truth.masks[:, k]
        expected = np.broadcast_to(truth.colours[:, k, None, None, :], frames.shape)
        assert np.array_equal(frames[inside], expected[inside]), f"object {k}"
    outside = ~truth.masks.any(axis=1)
    assert np.array_equal(frames[outside], truth.background[outside])
    assert np.array_equal(truth.present, truth.masks.any(axis=(2, 3)))
    assert not (truth.present & ~truth.in_scene).any()
    assert np.isnan(truth.centres[~truth.in_scene]).all()
    assert not np.isnan(truth.centres[truth.in_scene]).any()


def test_config_is_validated():
    with pytest.raises(SviError, match="size"):
        WorldConfig(size=8)
    with pytest.raises(SviError, match="clip_frames"):
        WorldConfig(clip_frames=1)
    with pytest.raises(SviError, match="objects"):
        WorldConfig(min_objects=3, max_objects=2)
    assert WorldConfig(size=64).scale == 2.0


@pytest.mark.parametrize(
    ("kind", "seed", "frames", "message"),
    [
        ("nope", 0, 8, "unknown world kind"),
        ("consistent", -1, 8, "seed"),
        ("talking", 0, 0, "frame"),
    ],
)
def test_bad_requests_raise(kind, seed, frames, message):
    with pytest.raises(SviError, match=message):
        render_episode(kind, seed, frames)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_differs(kind):
    a, b, c = (render_episode(kind, s, 20) for s in (5, 5, 6))
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.truth.masks.tobytes() == b.truth.masks.tobytes()
    assert a.prompts == b.prompts
    assert a.frames.tobytes() != c.frames.tobytes()
    if kind == "talking":
        assert a.audio.tobytes() == b.audio.tobytes()
        assert a.audio.tobytes() != c.audio.tobytes()
    if kind == "dancing":
        assert a.pose_frames.tobytes() == b.pose_frames.tobytes()


@pytest.mark.parametrize("kind", KINDS)
def test_shorter_episode_is_a_prefix(kind):
    short, long = render_episode(kind, 11, 24), render_episode(kind, 11, 43)
    k = short.truth.num_objects
    assert np.array_equal(short.frames, long.frames[:24])
    assert np.array_equal(short.truth.masks, long.truth.masks[:24, :k])
    assert short.prompts == long.prompts[:3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [16, 32, 48])
def test_ground_truth_matches_pixels(kind, size):
    config = WorldConfig(size=size)
    for seed in range(3):
        episode = render_episode(kind, seed, 40, config)
        assert episode.frames.shape == (40, size, size, 3)
        assert episode.frames.dtype == np.uint8
        assert len(episode.prompts) == 5 and episode.prompt == episode.prompts[0]
        assert_truth_matches_pixels(episode)


def test_episode_fields_and_clip_count():
    episode = render_episode("consistent", 0, 17, WorldConfig(clip_frames=4))
    truth = episode.truth
    t, k = 17, truth.num_objects
    assert len(episode.prompts) == 5
    assert truth.masks.shape == (t, k, 32, 32) and truth.masks.dtype == bool
    assert truth.centres.shape == (t, k, 2) and truth.centres.dtype == np.float32
    assert truth.colours.shape == (t, k, 3) and truth.colours.dtype == np.uint8
    assert truth.sizes.shape == (t, k) and truth.background.shape == (t, 32, 32, 3)
    assert list(truth.ids) == list(range(k))
    assert episode.audio is None and episode.pose_frames is None
    assert episode.split == split_of(0) == truth.meta["split"]


@pytest.mark.parametrize("seed", range(8))
def test_consistent_objects_stay_inside_slow_and_flat(seed):
    config = WorldConfig()
    episode = render_episode("consistent", seed, 80, config)
    truth = episode.truth
    assert config.min_objects <= truth.num_objects <= config.max_objects
    assert truth.in_scene.all()
    assert truth.present.mean() > 0.8  # rarely hidden behind another object
    radii = truth.sizes[0]
    assert (radii >= config.min_radius - 1e-4).all() and (radii <= config.max_radius + 1e-4).all()
    lo, hi = radii - 1e-3, 32 - radii + 1e-3
    assert ((truth.centres >= lo[None, :, None]) & (truth.centres <= hi[None, :, None])).all()
    step = np.linalg.norm(np.diff(truth.centres, axis=0), axis=-1)
    assert step.max() <= config.max_speed + 1e-4
    assert step.mean() > 0.05  # they do move
    palette = {tuple(v) for v in OBJECT_COLOURS.values()}
    assert all(tuple(c) in palette for c in truth.colours.reshape(-1, 3))
    assert (truth.colours == truth.colours[:1]).all()


def test_speed_scales_with_size():
    config = WorldConfig(size=64)
    truth = render_episode("consistent", 3, 40, config).truth
    step = np.linalg.norm(np.diff(truth.centres, axis=0), axis=-1)
    assert step.max() <= 2 * config.max_speed + 1e-4
    assert truth.sizes.min() >= 2 * config.min_radius - 1e-4


@pytest.mark.parametrize("seed", range(6))
def test_prompt_names_colours_shapes_and_background(seed):
    episode = render_episode("consistent", seed, 8)
    prompt = episode.prompt
    for name in episode.truth.names:
        colour, shape = name.split(" ")
        assert f"{colour} " in prompt and shape in prompt
    for colour in episode.truth.meta["backgrounds"][0]["colours"]:
        assert colour in prompt
    assert set(episode.prompts) == {prompt}


def test_prompts_differ_between_seeds():
    prompts = [render_episode("consistent", s, 8).prompt for s in range(30)]
    assert len(set(prompts)) == 30


def test_describe_names_everything():
    state = SceneState(
        (
            ObjectState("red", "disc", "bounce", "left"),
            ObjectState("blue", "square", "orbit", "clockwise"),
        ),
        BackgroundSpec("checkerboard", ("navy", "teal")),
        style=3,
    )
    text = describe(state)
    for word in ("red disc", "blue square", "left", "clockwise", "navy", "teal"):
        assert word in text
    assert describe(state) == text
    wordings = {describe(SceneState(state.objects, state.background, s)) for s in range(20)}
    assert len(wordings) > 5


def _step(centres: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(centres, axis=0), axis=-1)


def _check_event(episode, event) -> None:
    truth, f, clip = episode.truth, event["frame"], episode.config.clip_frames
    k, kind = event["object"], event["kind"]
    prompt = episode.prompts[event["clip"]]
    assert prompt == event["text"]
    frames = episode.frames.astype(np.float64)
    if kind == "colour":
        assert not np.array_equal(truth.colours[f - 1, k], truth.colours[f, k])
        new = next(name for frame, name in truth.meta["colours"][k] if frame == f)
        assert f"turns {new}" in prompt or f"to {new}" in prompt or f"becomes {new}" in prompt
    elif kind in ("dim", "brighten"):
        before, after = frames[f - 1].mean(), frames[f].mean()
        assert after < before if kind == "dim" else after > before
        bg_before, bg_after = truth.background[f - 1].mean(), truth.background[f].mean()
        assert bg_after < bg_before if kind == "dim" else bg_after > bg_before
    elif kind == "background":
        assert not np.array_equal(truth.background[f - 1], truth.background[f])
    elif kind == "enter":
        assert not truth.in_scene[:f, k].any() and truth.present[f, k]
        side = prompt.split("from the ")[1].split(" ")[0]
        x, y = truth.centres[f, k]
        r = truth.sizes[f, k]
        near = {"left": x < r, "right": x > 32 - r, "top": y < r, "bottom": y > 32 - r}
        assert near[side]
    elif kind == "leave":
        assert truth.in_scene[f - 1, k]
        end = f + clip - 1
        if end < truth.num_frames:
            assert not truth.in_scene[end:, k].any()
    elif kind == "stop":
        centres = truth.centres[f : f + clip, k]
        assert np.allclose(centres, centres[0])
    elif kind in ("speed_up", "resume"):
        before = _step(truth.centres[f - clip : f + 1, k])
        after = _step(truth.centres[f : f + clip, k])
        assert np.median(after) > np.median(before) + 0.05
    else:  # pragma: no cover
        raise AssertionError(kind)


def test_creative_events_are_visible_and_described():
    seen = set()
    for seed in range(10):
        episode = render_episode("creative", seed, 96)
        assert_truth_matches_pixels(episode)
        events = episode.truth.meta["events"]
        assert [e["clip"] for e in events] == list(range(1, 12))
        assert len(episode.prompts) == 12 and len(set(episode.prompts)) > 6
        for event in events:
            _check_event(episode, event)
            seen.add(event["kind"])
    assert seen >= {"colour", "enter", "leave", "background", "dim", "brighten", "stop"}
    assert seen & {"speed_up", "resume"}


def test_creative_speeds_stay_limited_except_leavers():
    config = WorldConfig()
    for seed in range(6):
        truth = render_episode("creative", seed, 96, config).truth
        leavers = {e["object"] for e in truth.meta["events"] if e["kind"] == "leave"}
        for k in range(truth.num_objects):
            if k in leavers:
                continue
            steps = _step(truth.centres[:, k])
            assert np.nanmax(steps, initial=0.0) <= config.max_speed + 1e-4


def test_backgrounds_keep_contrast_with_objects():
    for kind in ("consistent", "creative"):
        for seed in range(6):
            truth = render_episode(kind, seed, 48).truth
            for t in range(0, 48, 8):
                pixels = truth.background[t].reshape(-1, 3).astype(float)
                for k in np.flatnonzero(truth.in_scene[t]):
                    colour = truth.colours[t, k].astype(float)
                    level = truth.meta["lighting"]
                    lit = [v for frame, v in level if frame <= t][-1]
                    distance = np.linalg.norm(pixels - colour, axis=1).min()
                    assert distance >= 100 * min(lit, 1.0) - 2


def test_background_palette_is_darker_than_objects():
    bg = np.array(list(BACKGROUND_COLOURS.values())).max(axis=1)
    fg = np.array(list(OBJECT_COLOURS.values())).max(axis=1)
    assert bg.max() < fg.min()


def test_truth_save_load_round_trip(tmp_path):
    episode = render_episode("creative", 2, 24)
    npz, json_path = episode.truth.save(tmp_path)
    assert npz.name == "truth.npz" and json_path.name == "truth.json"
    loaded = GroundTruth.load(tmp_path)
    for name in ("ids", "masks", "present", "in_scene", "colours", "sizes", "background"):
        assert np.array_equal(getattr(loaded, name), getattr(episode.truth, name)), name
    assert np.array_equal(loaded.centres, episode.truth.centres, equal_nan=True)
    assert loaded.names == episode.truth.names
    assert loaded.meta["prompts"] == episode.prompts
    assert loaded.meta["split"] == split_of(2)
    assert WorldConfig.from_dict(loaded.meta["config"]) == episode.config
    with pytest.raises(SviError, match="not found"):
        GroundTruth.load(tmp_path / "missing")


def test_splits_partition_seeds():
    counts = {s: 0 for s in SPLITS}
    by_split = {s: [] for s in SPLITS}
    for seed in range(2000):
        split = split_of(seed)
        counts[split] += 1
        by_split[split].append(seed)
    assert 0.75 < counts["train"] / 2000 < 0.85
    assert 0.07 < counts["val"] / 2000 < 0.13 and 0.07 < counts["test"] / 2000 < 0.13
    for split in SPLITS:
        assert split_seeds(split, counts[split]) == by_split[split]
    chosen = [set(split_seeds(s, 50)) for s in SPLITS]
    assert (
        not (chosen[0] & chosen[1]) and not (chosen[0] & chosen[2]) and not (chosen[1] & chosen[2])
    )
    assert all(s >= 100 for s in split_seeds("test", 5, start=100))
    with pytest.raises(SviError, match="split"):
        split_seeds("dev", 3)
