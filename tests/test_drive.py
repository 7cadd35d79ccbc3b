"""Driven generation (SVI-Talk audio, SVI-Dance pose): streams per clip, CFG, adapters,
training with a condition, resume and bad inputs."""

from __future__ import annotations

import logging
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from svi.cli import main
from svi.conditions.adapters import (
    attach_condition,
    condition_config,
    condition_state_dict,
    model_condition,
)
from svi.conditions.drive import AudioDrive, ClipDrive, PoseDrive
from svi.conditions.windows import LatentAudio
from svi.errors import SviError
from svi.lora import read_lora, read_lora_metadata, save_lora
from svi.manifest import manifest_path
from svi.models.bundle import load_bundle
from svi.models.codec import PixelCodec
from svi.pipeline import SVIPipeline
from svi.plan import GenerationConfig, clips_covering
from svi.request import GenerateRequest, run_generate
from svi.sampling import guided_velocity
from svi.video import read_video, write_video
from svi.world import WorldConfig, render_episode
from test_session import _crash_after
from world_fixtures import build_tiny_world_model, random_lora

F, M = 5, 2  # the world model's clip: 5 frames, 2 carried


# ------------------------------------------------------------------ streams per clip
@pytest.mark.parametrize("frames,expected", [(1, 1), (5, 1), (6, 2), (8, 2), (9, 3), (41, 13)])
def test_clips_covering(frames: int, expected: int) -> None:
    n = clips_covering(frames, F, F - M)
    assert n == expected
    assert n * (F - M) + M >= frames  # covers the stream ...
    assert n == 1 or (n - 1) * (F - M) + M < frames  # ... with the fewest clips


def test_audio_clips_read_one_continuous_stream() -> None:
    feats = torch.arange(40.0)[:, None].expand(40, 3).clone()  # frame t has value t
    drive = AudioDrive(feats, temporal_factor=1)
    for k in range(1, 12):
        prev, cur = drive.clip(k - 1, F, M).value, drive.clip(k, F, M).value
        prev_rows = torch.cat([prev.first[0], prev.later[0]])  # (F, 5, 3) windows
        cur_rows = torch.cat([cur.first[0], cur.later[0]])
        # the carried frames of clip k hear what the last M frames of clip k-1 heard
        assert torch.equal(cur_rows[:M], prev_rows[F - M :])
        assert cur_rows[0, 2, 0].item() == min(k * (F - M), 39)  # centre = the stream frame


def test_audio_past_the_end_is_silence_and_pose_holds_its_last_frame() -> None:
    feats = torch.linspace(-10, 0, 8)[:, None].expand(8, 2).clone()  # quietest row is frame 0
    late = AudioDrive(feats, 1).clip(3, F, M).value  # frames 9..13, all past the end
    assert torch.equal(late.later, torch.full_like(late.later, -10.0))
    video = np.arange(6, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2)
    pose = PoseDrive(np.repeat(video, 3, axis=3), 1).clip(1, F, M).value  # frames 3..7
    assert [round(float(pose[0, 0, i, 0, 0]) * 255) for i in range(F)] == [3, 4, 5, 5, 5]


def test_length_follows_the_stream_and_longer_requests_are_refused() -> None:
    drive = AudioDrive(torch.zeros(41, 2), 1)
    assert drive.default_clips(F, M) == 13
    drive.check_clips(13, F, M)
    with pytest.raises(SviError, match=r"drives at most 13 clips .* not 14 clips"):
        drive.check_clips(14, F, M)
    with pytest.raises(SviError, match="not an endless video"):
        drive.check_clips(0, F, M)


def test_null_rows_are_zeros() -> None:
    value = LatentAudio(torch.ones(1, 1, 5, 2), torch.ones(1, 4, 5, 2))
    batch = ClipDrive("audio", value).batch(torch.tensor([True, False, True]))
    assert batch.first[:, 0, 0, 0].tolist() == [1.0, 0.0, 1.0]
    assert batch.later[:, 3, 4, 1].tolist() == [1.0, 0.0, 1.0]
    pose = ClipDrive("pose", torch.ones(1, 3, 5, 4, 4)).batch(torch.tensor([False, True]))
    assert pose[:, 1, 2, 3, 3].tolist() == [0.0, 1.0]


def test_bad_streams_are_refused() -> None:
    with pytest.raises(SviError, match="not finite"):
        AudioDrive(torch.tensor([[float("nan")]]), 1)
    with pytest.raises(SviError, match="guidance"):
        AudioDrive(torch.zeros(4, 2), 1, guidance=-1.0)
    with pytest.raises(SviError, match="uint8"):
        PoseDrive(np.zeros((3, 4, 4, 3), np.float32), 1)


# ------------------------------------------------------------------ three-pass CFG
def test_audio_cfg_combines_three_branches() -> None:
    """u + g_t (c - dt) + g_a (dt - u), with the audio kept in the first two branches."""
    calls = []

    def velocity(x, sigma, y, text, keep=None):
        calls.append(keep.tolist())
        return text[:, :1, :1].reshape(-1, 1, 1, 1, 1) + 10 * keep.float().view(-1, 1, 1, 1, 1)

    x = torch.zeros(1, 1, 1, 1, 1)
    text, neg = torch.full((1, 2, 2), 3.0), torch.full((1, 2, 2), 1.0)
    v = guided_velocity(velocity, x, torch.ones(1), x, text, neg, cfg=2.0, cond_cfg=5.0)
    assert calls == [[True, True, False]]
    v_c, v_dt, v_u = 13.0, 11.0, 1.0
    assert v.item() == pytest.approx(v_u + 2.0 * (v_c - v_dt) + 5.0 * (v_dt - v_u))


# ------------------------------------------------------------------ adapters
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world_model(tmp_path_factory.mktemp("model") / "tiny")


def make_adapter(model: Path, kind: str, path: Path, seed: int = 0) -> Path:
    """A conditional adapter of the tiny model with random (non-zero) condition weights."""
    dit = load_bundle(str(model)).transformer
    torch.manual_seed(seed)
    attach_condition(dit, kind, PixelCodec(), "world")
    extras = {k: torch.randn_like(v) * 0.3 for k, v in condition_state_dict(dit).items()}
    meta = {"condition": condition_config(dit)}
    return save_lora(path, random_lora(dit), metadata=meta, extras=extras)


@pytest.fixture(scope="module")
def adapters(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return {kind: make_adapter(model, kind, folder / f"{kind}.safetensors")
            for kind in ("audio", "pose")}  # fmt: skip


def test_adapter_file_holds_pairs_modules_and_their_shapes(adapters: dict[str, Path]) -> None:
    contents = read_lora(adapters["audio"])
    assert contents.entries and any(p.startswith("audio_proj.") for p in contents.extras)
    assert any(".audio_cross_attn.q_linear." in p for p in contents.extras)
    assert read_lora_metadata(adapters["audio"])["condition"]["kind"] == "audio"
    assert {p.split(".")[0] for p in read_lora(adapters["pose"]).extras} == {"dwpose_embedding"}


def test_loading_an_adapter_attaches_its_modules(model: Path, adapters: dict[str, Path]) -> None:
    pipe = SVIPipeline.from_pretrained(str(model))
    entry = pipe.load_lora(adapters["pose"])
    assert entry["condition"] == "pose" and model_condition(pipe.bundle.transformer) == "pose"
    with pytest.raises(SviError, match="already has pose modules"):
        pipe.load_lora(adapters["audio"])


@pytest.mark.parametrize("kind", ["audio", "pose"])
def test_the_drive_changes_the_clip_and_zero_init_does_not(
    model: Path, adapters: dict[str, Path], kind: str
) -> None:
    """A trained adapter's condition changes the output; freshly attached (zero-init)
    modules leave the model exactly as it was."""
    ep = render_episode("talking" if kind == "audio" else "dancing", 900001, 20, WorldConfig())
    if kind == "audio":
        from svi.conditions.audio import audio_features

        drive = AudioDrive(audio_features(ep.audio, 16000, 8), 1)
    else:
        drive = PoseDrive(ep.pose_frames, 1)
    start, config = ep.frames[:2], GenerationConfig(clips=1, seed=3, steps=2)
    plain = SVIPipeline.from_pretrained(str(model))
    ref = next(plain.generate(start, ["a face"], config)).frames
    attach_condition(plain.bundle.transformer, kind, PixelCodec(), "world")
    fresh = next(plain.generate(start, ["a face"], config, drive=drive)).frames
    assert np.array_equal(fresh, ref)
    pipe = SVIPipeline.from_pretrained(str(model))
    pipe.load_lora(adapters[kind])
    driven = next(pipe.generate(start, ["a face"], config, drive=drive)).frames
    other = replace(drive, features=drive.features.flip(0)) if kind == "audio" else PoseDrive(
        ep.pose_frames[::-1].copy(), 1)  # fmt: skip
    again = next(pipe.generate(start, ["a face"], config, drive=other)).frames
    assert not np.array_equal(driven, again)


def test_experts_without_keep_condition_every_row(model: Path, adapters) -> None:
    pipe = SVIPipeline.from_pretrained(str(model))
    pipe.load_lora(adapters["audio"])
    drive = AudioDrive(torch.randn(12, 40), 1).clip(0, F, M)
    experts = replace(pipe.bundle.experts, drive=drive)
    x, y = torch.randn(2, 3, F, 32, 32), torch.randn(2, 7, F, 32, 32)
    text = pipe.bundle.text_encoder.encode(["a", "a"])
    sigma = torch.full((2,), 0.5)
    full = experts(x, sigma, y, text)
    mixed = experts(x, sigma, y, text, keep=torch.tensor([True, False]))
    assert torch.equal(full[0], mixed[0]) and not torch.equal(full[1], mixed[1])


# ------------------------------------------------------------------ svi generate
def _wav(path: Path, audio: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    data = np.repeat(audio[:, None], channels, axis=1) if channels > 1 else audio
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("streams")
    talk = render_episode("talking", 900001, 20, WorldConfig())
    dance = render_episode("dancing", 900001, 14, WorldConfig(size=48))  # another size: fitted
    pose = folder / "pose.mp4"
    write_video(pose, dance.pose_frames, fps=8)
    from scipy.signal import resample_poly

    stereo48k = resample_poly(talk.audio, 3, 1).astype(np.float32)
    return {
        "wav": _wav(folder / "speech.wav", talk.audio),
        "stereo48k": _wav(folder / "speech48.wav", stereo48k, 48000, 2),
        "silent": _wav(folder / "silent.wav", np.zeros(16000, np.float32)),
        "empty": _wav(folder / "empty.wav", np.zeros(0, np.float32)),
        "corrupt": folder / "bad.wav",
        "pose": pose,
    }


def _request(model: Path, out: Path, **kw) -> GenerateRequest:
    config = kw.pop("config", None) or GenerationConfig(steps=2, seed=kw.pop("seed", 0))
    return GenerateRequest(out=out, model=str(model), progress=False, lossless=True,
                           config=config, **kw)  # fmt: skip


def test_audio_video_follows_the_wav_and_any_rate_or_channels(
    model: Path, adapters, streams, tmp_path: Path
) -> None:
    lora = [adapters["audio"]]
    manifest = run_generate(_request(model, tmp_path / "a.mp4", audio=streams["wav"], lora=lora))
    assert len(manifest["clips"]) == clips_covering(20, F, F - M) == 6
    assert manifest["inputs"]["drive"]["kind"] == "audio"
    assert len(read_video(tmp_path / "a.mp4")) == 6 * (F - M) + M
    other = run_generate(_request(model, tmp_path / "b.mp4", audio=streams["stereo48k"],
                                  lora=lora))  # fmt: skip
    assert len(other["clips"]) == 6  # resampled and averaged, not refused


def test_a_silent_wav_drives_a_listening_face_with_one_note(
    model: Path, adapters, streams, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        manifest = run_generate(_request(model, tmp_path / "s.mp4", audio=streams["silent"],
                                         lora=[adapters["audio"]]))  # fmt: skip
    notes = [r for r in caplog.records if "is silent" in r.getMessage()]
    assert len(notes) == 1 and "mouth stays closed" in notes[0].getMessage()
    assert manifest["status"] == "complete"
    assert len(manifest["clips"]) == clips_covering(8, F, F - M)  # 1 s at 8 fps


def test_driven_resume_is_frame_identical(
    model: Path, adapters, streams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream position of clip k depends on k alone: a crash after clip 2 resumes to
    the same frames (audio CFG on, so the three-pass path runs too)."""
    kw = {"audio": streams["wav"], "lora": [adapters["audio"]], "audio_cfg": 2.0, "seed": 5}
    ref = tmp_path / "ref.mp4"
    run_generate(_request(model, ref, **kw))
    out = tmp_path / "out.mp4"
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            run_generate(_request(model, out, **kw))
    with pytest.raises(SviError, match="changed: drive"):  # another guidance: refused
        run_generate(_request(model, out, resume=True, **{**kw, "audio_cfg": 3.0}))
    manifest = run_generate(_request(model, out, resume=True, **kw))
    assert manifest["status"] == "complete"
    assert np.array_equal(read_video(out), read_video(ref))


def test_pose_of_another_size_is_fitted(model: Path, adapters, streams, tmp_path: Path) -> None:
    manifest = run_generate(_request(model, tmp_path / "d.mp4", pose=streams["pose"],
                                     lora=[adapters["pose"]]))  # fmt: skip
    assert len(manifest["clips"]) == clips_covering(14, F, F - M) == 4
    assert read_video(tmp_path / "d.mp4").shape[1:3] == (32, 32)


def test_bad_driven_inputs_give_one_line_and_exit_2(
    model: Path, adapters, streams, tmp_path: Path, capsys
) -> None:
    streams["corrupt"].write_bytes(b"RIFF\x00\x00not a wave file")
    base = ["generate", "--model", str(model), "--steps", "2", "--no-progress"]
    audio, pose = str(adapters["audio"]), str(adapters["pose"])
    cases = {
        "empty": (["--audio", str(streams["empty"]), "--lora", audio], "holds no samples"),
        "corrupt": (["--audio", str(streams["corrupt"]), "--lora", audio], "cannot read wav"),
        "both": (["--audio", str(streams["wav"]), "--pose", str(streams["pose"])], "not both"),
        "other condition": (["--audio", str(streams["wav"]), "--lora", pose],
                            "adapter for pose"),
        "no drive": (["--lora", audio, "--clips", "1"], "give --audio"),
        "too long": (["--pose", str(streams["pose"]), "--lora", pose, "--clips", "9"],
                     "drives at most 4 clips"),
        "missing": (["--pose", str(tmp_path / "nope.mp4"), "--lora", pose], "does not exist"),
        "cfg alone": (["--audio-cfg", "2", "--clips", "1"], "need --audio"),
        "zero frames": (["--audio", str(streams["wav"]), "--lora", audio, "--frames", "0"],
                        "--frames must be"),
        "nan guidance": (["--audio", str(streams["wav"]), "--lora", audio, "--audio-cfg",
                          "nan"], "audio guidance must be"),
        "talk without audio": (["--variant", "talk", "--pose", str(streams["pose"]),
                                "--lora", pose], "--variant talk is driven by --audio"),
    }  # fmt: skip
    for name, (args, message) in cases.items():
        out = tmp_path / f"{name.replace(' ', '_')}.mp4"
        assert main([*base, *args, "--out", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (name, err)
        assert not out.exists() and not manifest_path(out).exists(), name


def test_an_adapter_of_another_model_is_refused(adapters, streams, tmp_path: Path, capsys):
    """The embedded world-tiny model is wider than the tiny model the adapter was made for."""
    out = tmp_path / "x.mp4"
    args = ["generate", "--audio", str(streams["wav"]), "--lora", str(adapters["audio"]),
            "--steps", "2", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not out.exists()


def test_the_talk_variant_runs_its_structure(model: Path, adapters, streams, tmp_path) -> None:
    """--variant talk on the world model: 1 carried frame; the audio still sets the length."""
    manifest = run_generate(
        _request(
            model,
            tmp_path / "t.mp4",
            audio=streams["wav"],
            lora=[adapters["audio"]],
            config=GenerationConfig(variant="talk", steps=2),
        )
    )
    plan = manifest["inputs"]["plan"]
    assert plan["motion_frames"] == 1 and plan["variant"] == "talk"
    assert len(manifest["clips"]) == clips_covering(20, F, F - 1) == 5
    assert manifest["inputs"]["drive"]["guidance"] == 1.0  # Wan's 5 is not the world's


def test_the_embedded_model_ships_talk_and_dance_adapters(streams, tmp_path: Path) -> None:
    """--audio / --pose alone load the shipped ERFT adapters; *_clean are their baselines."""
    for flag, name in (("audio", "talk"), ("pose", "dance")):
        source = streams["wav"] if flag == "audio" else streams["pose"]
        req = GenerateRequest(out=tmp_path / f"{name}.mp4", progress=False, clips=1,
                              config=GenerationConfig(steps=2), **{flag: source})  # fmt: skip
        manifest = run_generate(req)
        (lora,) = manifest["inputs"]["loras"]
        assert Path(lora["path"]).name == f"{name}_lora.safetensors"
        assert lora["condition"] == flag and manifest["inputs"]["drive"]["kind"] == flag
        clean = read_lora_metadata(Path(lora["path"]).with_name(f"{name}_clean_lora.safetensors"))
        assert clean["erft"] is False and read_lora_metadata(lora["path"])["erft"] is True
