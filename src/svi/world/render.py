"""``render_episode``: one seed -> frames, prompts, ground truth (and audio or poses)."""

from __future__ import annotations

from svi.world.backgrounds import render_background
from svi.world.config import WorldConfig
from svi.world.dancing import render_dancing
from svi.world.episode import (
    Episode,
    base_meta,
    build_truth,
    change_points,
    check_request,
    episode_rng,
)
from svi.world.raster import composite
from svi.world.scenes import colour_timeline, scene_layers, simulate
from svi.world.talking import render_talking


def _render_scene(kind: str, seed: int, num_frames: int, config: WorldConfig) -> Episode:
    track = simulate(kind, episode_rng(kind, seed), num_frames, config)
    images = [render_background(spec, config.size) for spec in track.backgrounds]
    layers = scene_layers(track, config.size)
    comp = composite(images, track.background_index, track.lighting, layers, config.size)
    meta = base_meta(kind, seed, config, track.prompts)
    meta["colours"] = [colour_timeline(index) for index in track.colour_index]
    meta["events"] = track.events
    meta["backgrounds"] = [spec.to_dict() for spec in track.backgrounds]
    meta["background_index"] = change_points(track.background_index)
    meta["lighting"] = change_points(track.lighting)
    truth = build_truth(comp, layers, meta)
    return Episode(kind, seed, config, comp.frames, track.prompts[0], track.prompts, truth)


def render_episode(
    kind: str, seed: int, num_frames: int, config: WorldConfig = WorldConfig()
) -> Episode:
    """Render ``num_frames`` frames of the ``kind`` world for ``seed``, with ground truth.

    Deterministic: the same (kind, seed, config) gives identical bytes, and a shorter
    episode is a prefix of a longer one (frames, truth and prompts of whole clips).
    """
    check_request(kind, seed, num_frames)
    if kind in ("consistent", "creative"):
        return _render_scene(kind, seed, num_frames, config)
    if kind == "talking":
        return render_talking(seed, num_frames, config)
    return render_dancing(seed, num_frames, config)
