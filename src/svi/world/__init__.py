"""The procedural video world: seeded scenes with exact ground truth.

Kinds: ``consistent`` (shapes with physics over a textured background, one prompt),
``creative`` (one event per clip: colour changes, entries, exits, new backgrounds,
lighting, speed changes), ``talking`` (a face whose mouth follows a speech-like
16 kHz audio signal) and ``dancing`` (a stick figure driven by a skeleton stream,
with an OpenPose-style pose video). See ``docs/world.md``.

Splits: seed -> ``blake2b(str(seed)) % 100``; < 80 train, 80-89 val, >= 90 test
(see :mod:`svi.world.splits`).
"""

from __future__ import annotations

from svi.world.config import KINDS, SAMPLE_RATE, WorldConfig
from svi.world.episode import Episode
from svi.world.prompts import ObjectState, SceneState, describe
from svi.world.render import render_episode
from svi.world.splits import SPLITS, split_of, split_seeds
from svi.world.truth import GroundTruth

__all__ = [
    "KINDS",
    "SAMPLE_RATE",
    "SPLITS",
    "Episode",
    "GroundTruth",
    "ObjectState",
    "SceneState",
    "WorldConfig",
    "describe",
    "render_episode",
    "split_of",
    "split_seeds",
]
