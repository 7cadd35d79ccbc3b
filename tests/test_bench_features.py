"""The world-feature encoder: shipped weights, consistency score, loader checks, training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from svi.bench.feature_training import dim_frames, speckle_objects, train_feature_encoder
from svi.bench.features import (
    DEFAULT_DIR,
    FEATURE_VERSION,
    INFO_FILE,
    WEIGHTS_FILE,
    EncoderConfig,
    FeatureEncoder,
    feature_consistency,
    frame_consistency,
    load_feature_encoder,
)
from svi.errors import SviError
from svi.world import WorldConfig, render_episode, split_seeds

REF = 8  # reference frames: the first clip


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    return load_feature_encoder()


@pytest.fixture(scope="module")
def scenes():
    seeds = split_seeds("val", 2)
    return [render_episode("consistent", seed, 24, WorldConfig(size=32)) for seed in seeds]


def test_embedding_shape_and_unit_norm(encoder, scenes) -> None:
    frames = scenes[0].frames
    emb = encoder.embed(frames)
    assert emb.shape == (len(frames), encoder.dim)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    big = frames.repeat(2, axis=1).repeat(2, axis=2)  # 64 px: area resize gives 32 px back
    np.testing.assert_allclose(encoder.embed(big), emb, atol=1e-5)
    assert encoder.embed(frames[:0]).shape == (0, encoder.dim)


def test_embedding_is_deterministic(encoder, scenes) -> None:
    frames = scenes[0].frames
    np.testing.assert_array_equal(encoder.embed(frames), encoder.embed(frames))
    np.testing.assert_allclose(
        encoder.embed(frames, batch_size=5), encoder.embed(frames), atol=1e-5
    )


def test_self_consistency_is_one(encoder, scenes) -> None:
    frames = np.repeat(scenes[0].frames[:1], 4, axis=0)
    assert feature_consistency(frames, frames, encoder) == pytest.approx(1.0, abs=1e-5)
    assert frame_consistency(frames, frames, encoder).shape == (4,)


def test_different_scene_scores_lower(encoder, scenes) -> None:
    ref = scenes[0].frames[:REF]
    same = feature_consistency(scenes[0].frames[REF:], ref, encoder)
    other = feature_consistency(scenes[1].frames[REF:], ref, encoder)
    assert same > 0.8
    assert other < same - 0.1


def test_speckle_and_dimming_score_lower(encoder, scenes) -> None:
    episode, truth = scenes[0], scenes[0].truth
    ref, clip = episode.frames[:REF], episode.frames[REF:]
    speckled = speckle_objects(
        clip,
        truth.masks[REF:],
        truth.colours[REF:],
        truth.background[REF:],
        np.random.default_rng(0),
    )
    # same colour histogram, shapes gone
    assert (speckled != clip).any()
    same = feature_consistency(clip, ref, encoder)
    assert feature_consistency(speckled, ref, encoder) < same - 0.1
    assert feature_consistency(dim_frames(clip, 0.6), ref, encoder) < same


def test_shipped_info_is_complete(encoder) -> None:
    info = encoder.info
    assert info["version"] == FEATURE_VERSION == encoder.version
    assert info["training"]["command"]
    assert set(info["val"]["heads"]) == set(info["training"]["heads"])
    assert info["sanity"]["same_scene"]["mean"] > info["sanity"]["different_scene"]["mean"]
    assert (DEFAULT_DIR / WEIGHTS_FILE).stat().st_size < 1_000_000


def _copy_shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "enc"
    shutil.copytree(DEFAULT_DIR, folder)
    return folder


def test_loader_refuses_tampered_weights(tmp_path) -> None:
    folder = _copy_shipped(tmp_path)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0x01  # one bit of one weight
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(SviError, match="sha256"):
        load_feature_encoder(folder)


def test_loader_refuses_config_mismatch(tmp_path) -> None:
    folder = _copy_shipped(tmp_path)
    info = json.loads((folder / INFO_FILE).read_text())
    info["config"]["embed_dim"] += 1
    (folder / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(SviError, match="config"):
        load_feature_encoder(folder)


def test_loader_refuses_missing_file(tmp_path) -> None:
    folder = _copy_shipped(tmp_path)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(SviError, match="not found"):
        load_feature_encoder(folder)
    with pytest.raises(SviError, match="not found"):
        load_feature_encoder(tmp_path / "nowhere")


def test_two_step_training_writes_loadable_files(tmp_path) -> None:
    config = EncoderConfig(channels=(4, 8), embed_dim=8)
    info = train_feature_encoder(
        tmp_path,
        steps=2,
        seed=0,
        config=config,
        batch_size=8,
        train_episodes=2,
        val_episodes=2,
        num_frames=8,
        frame_stride=2,
        sanity_episodes=1,
        command="test",
    )
    assert info["training"]["steps"] == 2
    loaded = load_feature_encoder(tmp_path)
    assert loaded.config == config
    assert loaded.info["training"]["command"] == "test"
    frames = render_episode("consistent", split_seeds("val", 1)[0], 3).frames
    assert loaded.embed(frames).shape == (3, 8)
