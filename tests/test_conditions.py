"""Conditions of SVI-Talk and SVI-Dance: audio features, windows, audio modules, pose
encoder, official key layouts and the wav2vec2 path, on tiny real classes."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from svi.conditions import (
    WAN_POSE_ENCODER,
    WORLD_AUDIO,
    AudioCrossAttention,
    AudioModulesConfig,
    AudioProjection,
    LatentAudio,
    PoseEncoder,
    PoseEncoderConfig,
    Wav2Vec2Features,
    attach_audio_modules,
    attach_pose_encoder,
    audio_condition,
    audio_features,
    clip_start_frame,
    clip_windows,
    detach_audio_modules,
    detach_pose_encoder,
    frame_windows,
    has_audio_modules,
    has_pose_encoder,
    latent_audio_windows,
    num_video_frames,
    pose_condition,
    pose_encoder_config,
    pose_input,
    read_wav,
    released_talk_start_frame,
)
from svi.errors import SviError
from svi.lora import apply_lora
from svi.models.codec import PixelCodec
from svi.models.presets import get_preset

SR = 16_000
WAN_CODEC = SimpleNamespace(spatial_factor=8, temporal_factor=4)  # Wan 2.1 VAE factors


def world_dit(num_layers: int = 2, seed: int = 0) -> WanTransformer3DModel:
    """The world-tiny DiT config (patch (1, 4, 4), width 128), fewer layers."""
    torch.manual_seed(seed)
    cfg = {**get_preset("world-tiny").transformer, "num_layers": num_layers}
    return WanTransformer3DModel(**cfg).eval()


def wan_like_dit(num_layers: int = 1, seed: int = 0) -> WanTransformer3DModel:
    """A Wan-shaped tiny DiT: patch (1, 2, 2) on 4-channel latents, width 16."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=num_layers,
        image_dim=None,
    ).eval()


def world_inputs(frames: int = 5, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 10, frames, 32, 32, generator=g),  # (B, C, F, H, W)
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 7, 384, generator=g),
    }


def run(model: WanTransformer3DModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def tone(seconds: float, rate: int, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def world_latent_audio(frames: int = 5, seed: int = 0) -> LatentAudio:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(frames + 4, WORLD_AUDIO.feature_dim, generator=g)
    return latent_audio_windows(frame_windows(feats, 0, frames), 1)


# ------------------------------------------------------------------ audio features


@pytest.mark.parametrize("fps", [8, 25])
def test_audio_features_one_row_per_video_frame_aligned_to_its_window(fps: int) -> None:
    audio = np.zeros(2 * SR, np.float32)
    start, end = 3 * SR // fps, 4 * SR // fps  # video frame 3's samples
    audio[start:end] = tone(2, SR)[start:end]
    feats = audio_features(audio, SR, fps, n_mels=24)
    assert feats.shape == (2 * fps, 24) and feats.dtype == torch.float32
    energy = feats.max(dim=1).values
    assert int(energy.argmax()) == 3
    # the frames two away from the burst hear (almost) nothing of it
    assert energy[1] < energy[3] - 3 and energy[5] < energy[3] - 3


def test_audio_features_silent_stereo_and_other_rates_are_finite_and_consistent() -> None:
    silent = audio_features(np.zeros(SR, np.float32), SR, 25)
    assert silent.shape == (25, 40) and torch.isfinite(silent).all()
    assert torch.equal(silent, torch.full_like(silent, -10.0))

    ref = audio_features(tone(1, SR), SR, 25)
    pcm = np.round(tone(1, SR) * 32768).astype(np.int16)  # integer PCM is scaled to [-1, 1]
    audible = ref > -6  # above the 16-bit quantisation noise
    assert (audio_features(pcm, SR, 25)[audible] - ref[audible]).abs().max() < 1e-2
    stereo = np.stack([tone(1, SR), tone(1, SR, amp=0.0)], axis=1)  # (N, 2): mixed to mono
    half = audio_features(tone(1, SR, amp=0.25), SR, 25)
    assert torch.allclose(audio_features(stereo, SR, 25), half, atol=1e-5)
    for rate in (8_000, 44_100):
        feats = audio_features(tone(1, rate), rate, 25)
        assert feats.shape == ref.shape and torch.isfinite(feats).all()
        loud = ref[1:-1] > -4  # bands the tone fills, away from the clicks at both ends
        assert loud.any()
        assert (feats[1:-1][loud] - ref[1:-1][loud]).abs().max() < 0.05


def test_audio_features_frame_count_rule_and_padding() -> None:
    assert num_video_frames(16_000, SR, 25) == 25
    assert num_video_frames(16_001, SR, 25) == 26  # a started frame counts
    assert num_video_frames(2000 * 7, SR, 8) == 7  # the world: 2000 samples per frame
    assert num_video_frames(44_100, 44_100, 24) == 24
    feats = audio_features(tone(0.5, SR), SR, 8, num_frames=6)
    assert feats.shape == (6, 40)
    assert torch.equal(feats[4:], torch.full((2, 40), -10.0))  # past the end: silence
    with pytest.raises(SviError, match="fps"):
        audio_features(tone(0.5, SR), SR, 200)
    with pytest.raises(SviError, match=r"\(channels, samples\)"):
        audio_features(np.zeros((2, 4000), np.float32), SR, 25)


def test_audio_features_follow_the_world_talking_envelope() -> None:
    from svi.world.config import WorldConfig
    from svi.world.talking import render_talking

    episode = render_talking(3, 40, WorldConfig())
    assert episode.audio is not None and episode.audio_envelope is not None
    feats = audio_features(episode.audio, SR, episode.config.fps)
    assert feats.shape[0] == episode.num_frames
    level = torch.log10(torch.pow(10.0, feats.double()).sum(dim=1))  # total power per frame
    envelope = np.log10(episode.audio_envelope.astype(np.float64) ** 2 + 1e-10)
    assert np.corrcoef(level.numpy(), envelope)[0, 1] > 0.95
    # appending audio changes no frame but the old last one
    longer = audio_features(np.concatenate([episode.audio, tone(1, SR)]), SR, episode.config.fps)
    assert torch.equal(longer[: episode.num_frames - 1], feats[:-1])


def _wav_bytes(tag: int, bits: int, channels: int, rate: int, payload: bytes) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_read_wav_pcm_float_and_stereo(tmp_path: Path) -> None:
    from svi.world.files import write_wav

    audio = tone(0.1, SR)
    mono, rate = read_wav(write_wav(tmp_path / "mono.wav", audio))
    assert rate == SR and mono.shape == (len(audio), 1)
    assert np.abs(mono[:, 0] - audio).max() < 1e-4

    stereo = np.stack([audio, -audio], axis=1)
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(44_100)
        handle.writeframes((stereo * 32767).astype("<i2").tobytes())
    got, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 44_100 and got.shape == (len(audio), 2)
    assert np.abs(got - stereo).max() < 1e-4

    (tmp_path / "float.wav").write_bytes(_wav_bytes(3, 32, 1, 8_000, audio.astype("<f4").tobytes()))
    got, rate = read_wav(tmp_path / "float.wav")
    assert rate == 8_000 and np.array_equal(got[:, 0], audio)


def test_read_wav_corrupt_files_are_one_line_errors(tmp_path: Path) -> None:
    good = _wav_bytes(1, 16, 1, SR, np.zeros(400, "<i2").tobytes())
    cases = {
        "garbage.wav": (b"\x00\x01 not a wav at all\n\x1b[31m", "not a RIFF/WAVE file"),
        "truncated.wav": (good[:-100], "'data' is truncated"),
        "nofmt.wav": (b"RIFF\x04\x00\x00\x00WAVE", "no valid 'fmt ' chunk"),
        "alaw.wav": (_wav_bytes(6, 8, 1, SR, b"\x00" * 10), "unsupported sample format"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SviError, match=message) as info:
            read_wav(tmp_path / name)
        assert "\n" not in str(info.value), name
    with pytest.raises(SviError, match="cannot read wav"):
        read_wav(tmp_path / "missing.wav")


# ------------------------------------------------------------------------- windows


def test_frame_windows_repeat_the_edge_frames() -> None:
    stream = torch.arange(10.0)[:, None]  # (T, 1): feature = stream index
    w = frame_windows(stream, 0, 10)[..., 0]
    assert w.shape == (10, 5)
    assert w[0].tolist() == [0, 0, 0, 1, 2]
    assert w[4].tolist() == [2, 3, 4, 5, 6]
    assert w[9].tolist() == [7, 8, 9, 9, 9]
    assert frame_windows(stream, 8, 4, radius=1)[..., 0].tolist() == [
        [7, 8, 9],
        [8, 9, 9],
        [9, 9, 9],
        [9, 9, 9],
    ]


@pytest.mark.parametrize(("frames", "carried"), [(9, 1), (5, 2), (81, 1)])
def test_clip_windows_follow_one_continuous_stream(frames: int, carried: int) -> None:
    stream = torch.arange(400.0)[:, None]
    step = frames - carried
    seen: list[float] = []
    for k in range(3):
        start = clip_start_frame(k, frames, carried)
        assert start == k * step
        w = clip_windows(stream, k, frames, carried)[..., 0]
        centres = w[:, 2]
        # clip k covers stream frames k (F - M) .. k (F - M) + F - 1
        assert centres.tolist() == list(range(k * step, k * step + frames))
        if k:  # its first M frames are the previous clip's last M, window and all
            prev = clip_windows(stream, k - 1, frames, carried)[..., 0]
            assert torch.equal(w[:carried], prev[step:])
        seen += centres[carried if k else 0 :].tolist()
    assert seen == list(range(len(seen)))  # the stitched video hears the stream in order


def test_released_talk_start_differs_from_the_continuous_rule() -> None:
    assert [released_talk_start_frame(k, 81, 1) for k in range(3)] == [0, 80, 161]
    assert [clip_start_frame(k, 81, 1) for k in range(3)] == [0, 80, 160]
    with pytest.raises(SviError):
        clip_start_frame(0, 5, 5)


def test_latent_grouping_follows_the_codec_temporal_factor() -> None:
    stream = torch.arange(40.0)[:, None]
    wan = latent_audio_windows(frame_windows(stream, 0, 9), 4)
    assert wan.first.shape == (1, 1, 5, 1) and wan.later.shape == (1, 2, 8, 1)
    assert wan.first[0, 0, :, 0].tolist() == [0, 0, 0, 1, 2]
    # 3 + 1 + 1 + 3 rows: frame 1's window up to its centre, the centres of frames 2 and 3,
    # frame 4's window from its centre
    assert wan.later[0, 0, :, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6]
    assert wan.later[0, 1, :, 0].tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    assert wan.latent_frames == 3

    world = latent_audio_windows(frame_windows(stream, 10, 5), 1)
    assert world.later.shape == (1, 4, 5, 1)  # one whole window per frame
    assert world.later[0, 2, :, 0].tolist() == [11, 12, 13, 14, 15]

    two = latent_audio_windows(frame_windows(stream, 10, 5), 2)
    assert two.later[0, 1, :, 0].tolist() == [11, 12, 13, 14, 15, 16]
    with pytest.raises(SviError, match="whole latent frames"):
        latent_audio_windows(frame_windows(stream, 0, 8), 4)


# ------------------------------------------------------------------- audio modules


def test_audio_projection_gives_tokens_per_latent_frame_from_its_own_windows() -> None:
    cfg = AudioModulesConfig(
        feature_dim=3 * 8, temporal_factor=4, intermediate_dim=16, context_tokens=4, context_dim=12
    )
    torch.manual_seed(0)
    proj = AudioProjection(cfg).eval()
    feats = torch.randn(20, 3, 8)  # (T, layers, width) as wav2vec2 gives
    audio = latent_audio_windows(frame_windows(feats, 0, 9), 4)
    tokens = proj(audio)
    assert tokens.shape == (1, 3, 4, 12)
    assert torch.allclose(tokens.mean(-1), torch.zeros(1, 3, 4), atol=1e-5)  # output LayerNorm
    later = audio.later.clone()
    later[:, 1] += 1.0  # latent frame 2's windows
    changed = (proj(LatentAudio(audio.first, later)) - tokens).abs().amax(dim=(2, 3))[0]
    assert changed[2] > 0 and changed[0] == 0 and changed[1] == 0
    with pytest.raises(SviError, match="do not fit the audio projection"):
        proj(latent_audio_windows(frame_windows(feats, 0, 5), 1))


def test_audio_cross_attention_is_block_diagonal_and_starts_at_zero() -> None:
    torch.manual_seed(0)
    attn = AudioCrossAttention(dim=16, context_dim=6, num_heads=2)
    x, tokens = torch.randn(2, 3 * 4, 16), torch.randn(1, 3, 5, 6)  # 3 latent frames of 4 tokens
    assert torch.equal(attn(x, tokens), torch.zeros(2, 12, 16))
    torch.nn.init.normal_(attn.proj.weight)
    out = attn(x, tokens)
    bumped = tokens.clone()
    bumped[:, 1] += 1.0
    diff = (attn(x, bumped) - out).abs().amax(dim=-1)  # (B, 12)
    frame_of = torch.arange(12) // 4
    assert (diff[:, frame_of == 1] > 0).all()
    assert (diff[:, frame_of != 1] == 0).all()


def test_attached_modules_leave_the_dit_bit_identical_until_trained() -> None:
    model = world_dit()
    inputs = world_inputs()
    base = run(model, inputs)
    keys = set(model.state_dict())
    attach_audio_modules(model, WORLD_AUDIO)
    attach_pose_encoder(model, pose_encoder_config(model, PixelCodec()))
    assert has_audio_modules(model) and has_pose_encoder(model)
    pose = pose_input(np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), np.uint8), 1)
    with audio_condition(model, world_latent_audio()), pose_condition(model, pose):
        assert torch.equal(run(model, inputs), base)
    assert torch.equal(run(model, inputs), base)
    detach_audio_modules(model)
    detach_pose_encoder(model)
    assert set(model.state_dict()) == keys and not has_audio_modules(model)
    assert torch.equal(run(model, inputs), base)


def test_audio_of_latent_frame_j_changes_only_frame_j_after_one_block() -> None:
    # one block: the audio enters after self-attention, everything after it is per token
    model = world_dit(num_layers=1)
    inputs = world_inputs()
    base = run(model, inputs)
    attach_audio_modules(model, WORLD_AUDIO)
    torch.nn.init.normal_(model.blocks[0].audio_cross_attn.proj.weight, std=0.2)
    audio = world_latent_audio()
    with audio_condition(model, audio):
        out = run(model, inputs)
    assert not torch.equal(out, base)
    with audio_condition(model, None):  # no audio: the audio path is skipped
        assert torch.equal(run(model, inputs), base)
    later = audio.later.clone()
    later[:, 2] = torch.randn_like(later[:, 2])  # latent frame 3
    with audio_condition(model, LatentAudio(audio.first, later)):
        diff = (run(model, inputs) - out).abs().amax(dim=(0, 1, 3, 4))  # per frame
    assert diff[3] > 1e-4
    assert torch.equal(diff[[0, 1, 2, 4]], torch.zeros(4))
    with (
        audio_condition(model, world_latent_audio(frames=4)),
        pytest.raises(SviError, match="audio covers 4 latent frames but the transformer"),
    ):
        run(model, inputs)


def test_audio_modules_on_a_wan_shaped_dit_use_the_temporal_factor() -> None:
    model = wan_like_dit()
    cfg = AudioModulesConfig(
        feature_dim=2 * 8, temporal_factor=4, intermediate_dim=16, context_tokens=4, context_dim=12
    )
    attach_audio_modules(model, cfg)
    inputs = {
        "hidden_states": torch.randn(1, 4, 3, 8, 8),  # 3 latent frames = 9 video frames
        "timestep": torch.tensor([10]),
        "encoder_hidden_states": torch.randn(1, 5, 16),
    }
    audio = latent_audio_windows(frame_windows(torch.randn(30, 2, 8), 0, 9), 4)
    base = run(model, inputs)
    with audio_condition(model, audio):
        assert torch.equal(run(model, inputs), base)
        torch.nn.init.normal_(model.blocks[0].audio_cross_attn.proj.weight)
        later = audio.later.clone()
        later[:, 0] += 1.0  # latent frame 1
        out = run(model, inputs)
    with audio_condition(model, LatentAudio(audio.first, later)):
        diff = (run(model, inputs) - out).abs().amax(dim=(0, 1, 3, 4))
    assert diff[1] > 0 and diff[0] == 0 and diff[2] == 0


def test_zero_initialised_outputs_still_learn_with_gradient_checkpointing() -> None:
    grads = []
    for checkpointing in (False, True):
        model = world_dit(num_layers=2)
        attach_audio_modules(model, WORLD_AUDIO)
        attach_pose_encoder(model, pose_encoder_config(model, PixelCodec()))
        model.train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        pose = pose_input(torch.full((1, 3, 5, 32, 32), 200.0), 1)
        with audio_condition(model, world_latent_audio()), pose_condition(model, pose):
            out = model(**world_inputs(), return_dict=False)[0]
        out.square().mean().backward()
        grads.append(
            [
                model.blocks[1].audio_cross_attn.proj.weight.grad.clone(),
                model.dwpose_embedding[12].weight.grad.clone(),
            ]
        )
    for plain, checkpointed in zip(*grads, strict=True):
        assert plain.abs().sum() > 0
        assert torch.allclose(plain, checkpointed, rtol=1e-4, atol=1e-7)


def test_audio_layout_of_multitalk_loads_through_apply_lora(tmp_path: Path) -> None:
    donor = world_dit(seed=3)
    attach_audio_modules(donor, WORLD_AUDIO)
    for p in donor.parameters():
        torch.nn.init.normal_(p, std=0.05)
    sd = {
        k: v.detach().clone()
        for k, v in donor.state_dict().items()
        if "audio" in k or ".norm_x." in k
    }
    assert "audio_proj.proj1_vf.weight" in sd and "blocks.1.audio_cross_attn.kv_linear.bias" in sd
    assert "blocks.0.norm_x.weight" in sd and len(sd) == 10 + 2 * 8
    save_file(sd, str(tmp_path / "multitalk.safetensors"))
    model = world_dit()
    with pytest.raises(SviError, match="audio projection and per-block audio attention"):
        apply_lora(model, tmp_path / "multitalk.safetensors")
    attach_audio_modules(model, WORLD_AUDIO)
    report = apply_lora(model, tmp_path / "multitalk.safetensors")
    assert "audio_proj (10 tensors)" in report.extras
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


# ---------------------------------------------------------------------------- pose


def test_pose_input_divides_by_255_and_repeats_the_first_frame() -> None:
    frames = np.zeros((9, 4, 4, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(9) * 10
    x = pose_input(frames, 4)
    assert x.shape == (1, 3, 12, 4, 4) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0, :, 0, 0] * 255, torch.tensor([0.0] * 4 + [*range(10, 90, 10)]))
    assert pose_input(torch.ones(2, 3, 5, 4, 4) * 255, 1).shape == (2, 3, 5, 4, 4)
    with pytest.raises(SviError, match="pose frames"):
        pose_input(np.zeros((9, 4, 4)), 4)


def test_pose_encoder_has_the_released_layout() -> None:
    shapes = {k: tuple(v.shape) for k, v in PoseEncoder(WAN_POSE_ENCODER).state_dict().items()}
    assert shapes == {
        "0.weight": (16, 3, 3, 3, 3),
        "0.bias": (16,),
        **{f"{i}.weight": (16, 16, 3, 3, 3) for i in (2, 4, 6, 8, 10)},
        **{f"{i}.bias": (16,) for i in (2, 4, 6, 8, 10)},
        "12.weight": (5120, 16, 1, 2, 2),
        "12.bias": (5120,),
    }
    strides = [m.stride for m in PoseEncoder(WAN_POSE_ENCODER) if isinstance(m, torch.nn.Conv3d)]
    assert strides == [(1, 1, 1)] * 3 + [(1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)]
    with pytest.raises(SviError, match="spatial stride"):
        PoseEncoderConfig(out_channels=8, spatial_stride=12)


@pytest.mark.parametrize("kind", ["world", "wan"])
def test_pose_encoder_output_matches_the_patch_tokens(kind: str) -> None:
    if kind == "world":
        model, codec, frames = world_dit(num_layers=1), PixelCodec(), 5
        latents = torch.randn(1, 10, 5, 32, 32)
        expected = (1, 4)
    else:
        model, codec, frames = wan_like_dit(), WAN_CODEC, 9
        latents = torch.randn(1, 4, 3, 4, 4)  # 9 frames of 32x32 through a 4x/8x VAE
        expected = (4, 16)
    config = pose_encoder_config(model, codec)
    assert (config.temporal_stride, config.spatial_stride) == expected
    encoder = attach_pose_encoder(model, config)
    pose = pose_input(torch.rand(1, 3, frames, 32, 32) * 255, codec.temporal_factor)
    with torch.no_grad():
        tokens = model.patch_embedding(latents)
        assert encoder(pose).shape == tokens.shape
    torch.nn.init.normal_(encoder[12].weight)
    with pose_condition(model, pose), torch.no_grad():
        added = model.patch_embedding(latents)
    assert not torch.equal(added, tokens)
    bad = pose_input(torch.rand(1, 3, frames + 4, 32, 32), codec.temporal_factor)
    with pose_condition(model, bad), pytest.raises(SviError, match="patch embedding gives"):
        model.patch_embedding(latents)


def test_official_pose_file_loads_through_apply_lora(tmp_path: Path) -> None:
    model = world_dit(num_layers=1)
    config = pose_encoder_config(model, PixelCodec())
    torch.manual_seed(5)
    donor = PoseEncoder(config)
    torch.nn.init.normal_(donor[12].weight, std=0.1)
    sd = {f"dwpose_embedding.{k}": v for k, v in donor.state_dict().items()}
    assert sorted(sd) == sorted(
        f"dwpose_embedding.{i}.{p}" for i in (0, 2, 4, 6, 8, 10, 12) for p in ("weight", "bias")
    )
    # a Dance file also holds the SVI LoRA, in the peft-on-DiffSynth form
    a, b = torch.randn(2, 128) * 0.01, torch.randn(128, 2) * 0.01
    sd["pipe.dit.blocks.0.self_attn.q.lora_A.default.weight"] = a
    sd["pipe.dit.blocks.0.self_attn.q.lora_B.default.weight"] = b
    path = tmp_path / "svi-dance.safetensors"
    save_file(sd, str(path))
    with pytest.raises(SviError, match="pose encoder"):
        apply_lora(world_dit(num_layers=1), path)

    attach_pose_encoder(model, config)
    q = model.blocks[0].attn1.to_q.weight.detach().clone()
    report = apply_lora(model, path)
    assert report.extras == "dwpose_embedding (14 tensors)" and report.n_modules == 1
    assert torch.allclose(model.blocks[0].attn1.to_q.weight, q + b @ a)
    for k, v in donor.state_dict().items():
        assert torch.equal(model.dwpose_embedding.state_dict()[k], v)
    inputs = world_inputs()
    pose = pose_input(torch.rand(1, 3, 5, 32, 32) * 255, 1)
    with pose_condition(model, pose):
        conditioned = run(model, inputs)
    assert not torch.equal(conditioned, run(model, inputs))


# ------------------------------------------------------------------------- wav2vec2


@pytest.fixture(scope="module")
def tiny_wav2vec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=24,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        vocab_size=8,
    )
    folder = tmp_path_factory.mktemp("wav2vec2")
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(folder)
    return folder


def test_wav2vec2_features_stack_every_layer_at_the_video_rate(tiny_wav2vec: Path) -> None:
    encoder = Wav2Vec2Features.from_folder(tiny_wav2vec)
    assert (encoder.num_layers, encoder.width, encoder.feature_dim) == (3, 16, 48)
    audio = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    feats = encoder(audio, SR, 25)
    assert feats.shape == (25, 3, 16) and torch.isfinite(feats).all()

    # at the conv stack's own rate the interpolation is the identity: the model's layers
    x = torch.from_numpy(audio)
    x = (x - x.mean()) / torch.sqrt(x.var(correction=0) + 1e-7)
    with torch.no_grad():
        out = encoder.model(x[None], output_hidden_states=True)
    native = torch.stack(out.hidden_states[1:], dim=2)[0]
    assert torch.allclose(encoder(audio, SR, 25, num_frames=native.shape[0]), native, atol=1e-5)

    stereo = np.stack([audio, audio], axis=1)
    at_44k = encoder(stereo, 44_100, 25)
    assert at_44k.shape == (math.ceil(SR * 25 / 44_100), 3, 16)
    assert torch.isfinite(encoder(np.zeros(SR, np.float32), SR, 25)).all()

    windows = frame_windows(feats, 0, 9)
    config = AudioModulesConfig(
        feature_dim=encoder.feature_dim, intermediate_dim=8, context_tokens=2, context_dim=8
    )
    assert AudioProjection(config)(latent_audio_windows(windows, 4)).shape == (1, 3, 2, 8)


def test_wav2vec2_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(SviError, match="not a wav2vec2 model folder"):
        Wav2Vec2Features.from_folder(tmp_path)
