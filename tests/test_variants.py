"""Released SVI variants (svi.variants): settings, precedence, and the y each clip gets,
bit-exact against references written here from docs/variants-sources.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import svi.pipeline as pipeline_module
from svi.errors import SviError
from svi.models.presets import get_preset
from svi.pipeline import GenerationConfig, SVIPipeline, rollout
from svi.pixels import to_signed
from svi.plan import clips_for_length
from svi.variants import NEGATIVE_EN, NEGATIVE_ZH, VARIANTS, get_variant, markdown_table
from wan_fixtures import build_tiny_wan_folder

CLIP = {"height": 32, "width": 32, "num_frames": 9, "steps": 2}
WAN21, A14B = "wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"


@pytest.fixture(scope="module")
def wan21(tmp_path_factory) -> SVIPipeline:
    folder = build_tiny_wan_folder(tmp_path_factory.mktemp("w21"), WAN21)
    return SVIPipeline.from_pretrained(folder, **CLIP)


@pytest.fixture(scope="module")
def a14b(tmp_path_factory) -> SVIPipeline:
    folder = build_tiny_wan_folder(tmp_path_factory.mktemp("a14b"), A14B)
    return SVIPipeline.from_pretrained(folder, **CLIP)


def _start() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)


def _recording(monkeypatch) -> list[dict]:
    """Every sample_latents call of the clip loop: its y, noise and result."""
    calls: list[dict] = []
    original = pipeline_module.sample_latents

    def record(velocity, noise, y, *args, **kwargs):
        out = original(velocity, noise, y, *args, **kwargs)
        calls.append({"y": y.clone(), "noise": noise.clone(), "latents": out.clone()})
        return out

    monkeypatch.setattr(pipeline_module, "sample_latents", record)
    return calls


def _mask_latent0(f: int, h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(1, 4, f, h, w)
    mask[:, :, 0] = 1.0
    return mask


def _pixel_reference(pipe, given: np.ndarray, anchor: np.ndarray, padding: str):
    """y of test_svi.py: [given frames, padding frames] encoded whole, mask on latent 0."""
    f_px = pipe.bundle.preset.num_frames
    frames = [to_signed(x) for x in given]
    fill = to_signed(anchor) if padding == "anchor" else torch.zeros_like(frames[0])
    frames += [fill] * (f_px - len(frames))
    video = torch.stack(frames, dim=1)[None]  # (1, 3, F, H, W)
    latent = pipe.bundle.codec.encode(video)
    _, _, f, h, w = latent.shape
    return torch.cat([_mask_latent0(f, h, w), latent], dim=1)


# -- the table -------------------------------------------------------------------------
def test_variant_table_matches_the_released_scripts():
    """Spot values from docs/variants-sources.md (script flags over argparse defaults)."""
    shot, film, tom = VARIANTS["shot"], VARIANTS["film"], VARIANTS["tom"]
    assert (shot.motion_frames, shot.padding, shot.first_prompt_only) == (1, "anchor", True)
    assert (film.motion_frames, film.padding, tom.motion_frames, tom.padding) == (
        5, "zeros", 1, "zeros")  # fmt: skip
    assert VARIANTS["2.0"].prompt_repeat == 2 and VARIANTS["2.0"].motion_frames == 5
    pro = VARIANTS["2.0-pro"]
    assert (pro.handoff, pro.padding, pro.overlap, pro.fps, pro.default_clips) == (
        "latent", "anchor-first", 4, 15, 15)  # fmt: skip
    for v in (shot, film, tom, VARIANTS["2.0"]):
        assert (v.steps, v.shift, v.cfg, v.fps, v.negative_prompt) == (50, 5.0, 5.0, 24,
                                                                         NEGATIVE_EN)  # fmt: skip
    assert pro.negative_prompt == NEGATIVE_ZH and NEGATIVE_ZH.startswith("色调艳丽")
    assert NEGATIVE_EN.startswith("bright tones, overexposed, static, blurred details")
    table = markdown_table()
    assert all(f"| {name} |" in table for name in VARIANTS)


def test_variant_lookup_by_model():
    assert get_variant("2.0", get_preset(A14B)).name == "2.0-a14b"
    assert get_variant("2.0", get_preset(WAN21)).name == "2.0"
    assert get_variant("film", get_preset("world-tiny")).name == "film"
    with pytest.raises(SviError, match="unknown variant 'bogus'"):
        get_variant("bogus", get_preset(WAN21))
    with pytest.raises(SviError, match=r"released for wan2\.2-i2v-a14b, not wan2\.1"):
        get_variant("2.0-pro", get_preset(WAN21))
    with pytest.raises(SviError, match=r"released for wan2\.1"):
        get_variant("shot", get_preset(A14B))
    assert get_variant("talk", get_preset(WAN21)).condition == "audio"  # driven by --audio


# -- plans -----------------------------------------------------------------------------
def test_variant_settings_are_defaults_and_flags_override(wan21):
    plan = wan21.plan(GenerationConfig(variant="film", clips=3), ["a", "b"])
    assert (plan.motion_frames, plan.padding, plan.cfg, plan.fps, plan.seed_stride) == (
        5, "zeros", 5.0, 24, 42)  # fmt: skip
    assert plan.steps == 50 and plan.negative_prompt == NEGATIVE_EN and plan.variant == "film"
    plan = wan21.plan(GenerationConfig(variant="film", clips=3, motion_frames=1, cfg=3.0,
                                       padding="anchor", steps=2), ["a", "b"])  # fmt: skip
    assert (plan.motion_frames, plan.cfg, plan.padding, plan.steps) == (1, 3.0, "anchor", 2)
    assert wan21.plan(GenerationConfig(variant="film"), ["a"], fps=30).fps == 30


def test_world_model_takes_only_the_structure(tmp_path):
    from world_fixtures import build_tiny_world_model

    pipe = SVIPipeline.from_pretrained(build_tiny_world_model(tmp_path / "m"))
    preset = pipe.bundle.preset
    plan = pipe.plan(GenerationConfig(variant="tom", clips=2), ["a", "b"])
    assert (plan.padding, plan.motion_frames, plan.seed_stride) == ("zeros", 1, 42)
    assert (plan.steps, plan.cfg, plan.fps, plan.negative_prompt) == (
        preset.steps, preset.cfg, preset.fps, preset.negative_prompt)  # fmt: skip
    # M = 5 of F = 5: the error names where M came from
    with pytest.raises(SviError, match=r"^--variant film \(motion frames 5; override with "
                       r"--motion-frames\): carries 5 frames; a \S+ clip has 5$"):  # fmt: skip
        pipe.plan(GenerationConfig(variant="film", clips=2), ["a", "b"])
    with pytest.raises(SviError, match=r"^--motion-frames 5: carries 5 frames"):
        pipe.plan(GenerationConfig(variant="film", motion_frames=5, clips=2), ["a", "b"])
    assert pipe.plan(GenerationConfig(variant="film", motion_frames=2, clips=2), ["a", "b"])


def test_latent_motion_frames_must_leave_room(wan21):
    with pytest.raises(SviError, match=r"^--motion-frames 99: 99 latent frames leave nothing"):
        wan21.plan(GenerationConfig(handoff="latent", motion_frames=99), ["a"])


def test_seed_stride_is_42_everywhere(wan21):
    assert wan21.plan(GenerationConfig(clips=3), ["a"]).clip_seed(3) == 126
    plan = wan21.plan(GenerationConfig(clips=3, seed=5, seed_stride=7), ["a"])
    assert plan.clip_seed(2) == 19


def test_prompt_repeat_and_first_only(wan21):
    plan = wan21.plan(GenerationConfig(variant="2.0", clips=5), ["a", "b", "c"])
    assert [wan21.prompt_for(["a", "b", "c"], k, plan) for k in range(7)] == list("aabbccc")
    shot = wan21.plan(GenerationConfig(variant="shot", clips=3), ["a", "b"])
    assert [wan21.prompt_for(["a", "b"], k, shot) for k in range(3)] == ["a", "a", "a"]


@pytest.mark.parametrize(
    ("variant", "prompts", "expected"),
    [("shot", 1, 10), ("film", 3, 3), ("film", 177, 10), ("2.0", 117, 234), ("2.0", 4, 8)],
)
def test_default_clip_counts(wan21, variant, prompts, expected):
    from svi.variants import variant_clips

    plan = wan21.plan(GenerationConfig(variant=variant), ["p"] * prompts)
    n_prompts = 1 if plan.first_prompt_only else prompts * plan.prompt_repeat
    assert variant_clips(plan, n_prompts) == expected


@pytest.mark.parametrize(
    ("f", "new", "length", "clips"),
    [(81, 76, 81, 1), (81, 76, 82, 2), (81, 77, 81 + 77 * 3, 4), (81, 77, 81 + 77 * 3 + 1, 5)],
)
def test_clips_for_length_with_any_stitching(f, new, length, clips):
    kw = {"seconds": None, "forever": False, "fps": 16, "n_prompts": 1, "default_seconds": 1.0}
    n = clips_for_length(clips=None, frames=length, num_frames=f, new_frames=new, **kw)
    assert n == clips
    assert f + (n - 1) * new >= length  # long enough
    assert n == 1 or f + (n - 2) * new < length  # and one clip fewer would not be


# -- y of clips 1 and 2, bit-exact ------------------------------------------------------
@pytest.mark.parametrize("name", ["shot", "film", "tom", "2.0"])
def test_svi1_variants_build_the_reference_y(wan21, monkeypatch, name):
    calls = _recording(monkeypatch)
    start = _start()
    video, clips = rollout(wan21, start, ["a cat", "a dog"], GenerationConfig(
        variant=name, clips=2, steps=2))  # fmt: skip
    v = VARIANTS[name]
    torch.testing.assert_close(calls[0]["y"], _pixel_reference(wan21, start, start[0], v.padding),
                               rtol=0, atol=0)  # fmt: skip
    carried = clips[0].frames[-v.motion_frames :]
    reference = _pixel_reference(wan21, carried, start[0], v.padding)
    torch.testing.assert_close(calls[1]["y"], reference, rtol=0, atol=0)
    f, m = 9, v.motion_frames
    assert len(video) == 2 * (f - m) + m  # test_svi.py: video[:-M] of every clip but the last
    assert np.array_equal(video[: f - m], clips[0].frames[: f - m])
    assert [c.seed for c in clips] == [0, 42]


def test_a14b_20_keeps_the_previous_frame_and_drops_the_new_head(a14b, monkeypatch):
    calls = _recording(monkeypatch)
    start = _start()
    video, clips = rollout(a14b, start, ["a", "b", "c"], GenerationConfig(
        variant="2.0", clips=3, steps=2))  # fmt: skip
    assert clips[0].index == 0 and len(video) == 9 + 2 * 8
    assert np.array_equal(video[:9], clips[0].frames)  # clip 0 whole
    assert np.array_equal(video[9:17], clips[1].frames[1:])  # later clips lose frame 0
    reference = _pixel_reference(a14b, clips[0].frames[-1:], start[0], "anchor")
    torch.testing.assert_close(calls[1]["y"], reference, rtol=0, atol=0)
    assert [c.prompt for c in clips] == ["a", "b", "c"]


def test_pro_y_is_anchor_latent_then_carried_latent_then_zeros(a14b, monkeypatch):
    calls = _recording(monkeypatch)
    start = _start()
    video, clips = rollout(a14b, start, ["a", "b"], GenerationConfig(
        variant="2.0-pro", clips=3, steps=2))  # fmt: skip
    anchor_latent = a14b.bundle.codec.encode(to_signed(start[0])[None, :, None])  # alone
    _, c, f, h, w = calls[0]["latents"].shape
    mask = _mask_latent0(f, h, w)
    first = torch.cat([anchor_latent, torch.zeros(1, c, f - 1, h, w)], dim=2)
    torch.testing.assert_close(calls[0]["y"], torch.cat([mask, first], 1), rtol=0, atol=0)
    for k in (1, 2):
        carried = calls[k - 1]["latents"][:, :, -1:]  # the final latents, no VAE round trip
        later = torch.cat([anchor_latent, carried, torch.zeros(1, c, f - 2, h, w)], dim=2)
        torch.testing.assert_close(calls[k]["y"], torch.cat([mask, later], 1), rtol=0, atol=0)
    assert len(video) == 9 + 2 * (9 - 4)  # later clips drop their first 4 frames
    assert np.array_equal(video[9:14], clips[1].frames[4:])


def test_overlap_needs_head_stitching(wan21):
    with pytest.raises(SviError, match="--overlap applies to head stitching"):
        wan21.plan(GenerationConfig(variant="film", overlap=3), ["a"])
    plan = rollout_plan = wan21.plan(GenerationConfig(variant="film", clips=2), ["a"])
    assert rollout_plan.stitch_tail == plan.motion_frames and plan.stitch_head == 0


def test_anchor_first_needs_latent_handoff(wan21):
    with pytest.raises(SviError, match="needs --handoff latent"):
        wan21.plan(GenerationConfig(padding="anchor-first"), ["a"])


def test_cli_variant_end_to_end(tmp_path: Path, capsys) -> None:
    """`svi generate --variant tom` on a tiny Wan 2.1 folder: the manifest holds the plan."""
    import json

    from svi.cli import main

    folder = build_tiny_wan_folder(tmp_path, WAN21)
    image = tmp_path / "start.png"
    from PIL import Image

    Image.fromarray(_start()[0]).save(image)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n", encoding="utf-8")
    out = tmp_path / "v.mp4"
    code = main(["generate", "--model", str(folder), "--variant", "tom", "--image", str(image),
                 "--prompts", str(prompts), "--steps", "1", "--height", "32", "--width", "32",
                 "--num-frames", "9", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.with_suffix(".svi.json").read_text())["inputs"]["plan"]
    assert (plan["variant"], plan["padding"], plan["motion_frames"], plan["fps"]) == (
        "tom", "zeros", 1, 24)  # fmt: skip
    assert plan["clips"] == 2  # min(10, number of prompts)


# -- aspect policy ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "kw", "expected"),
    [((1080, 1920), {"max_width": 832}, (464, 832)),  # calculate_dimensions: int(), floor 16
     ((480, 640), {"max_width": 832}, (480, 640)),  # narrower than the cap: kept
     ((1920, 1080), {"max_width": 832}, (1472, 832)),  # the script caps the width only
     ((1920, 1080), {"max_side": 832}, (832, 464)),  # svi's default caps the longer side
     ((500, 700), {"max_width": 640}, (448, 640)),  # talk / dance: int(457.1) -> 448
     ((33, 47), {"max_side": 832}, (32, 32))],
)  # fmt: skip
def test_clip_size_keeps_the_aspect(size, kw, expected):
    from svi.starts import clip_size

    assert clip_size(*size, **kw) == expected


def test_clip_size_refuses_tiny_images():
    from svi.starts import clip_size

    with pytest.raises(SviError, match="too small"):
        clip_size(10, 400, max_side=832)


def test_cli_takes_the_image_aspect_and_refuses_odd_sizes(tmp_path: Path, capsys) -> None:
    import json

    from PIL import Image

    from svi.cli import main

    folder = build_tiny_wan_folder(tmp_path, WAN21)
    image = tmp_path / "wide.png"
    Image.fromarray(np.full((40, 70, 3), 90, np.uint8)).save(image)
    out = tmp_path / "v.mp4"
    base = ["generate", "--model", str(folder), "--image", str(image), "--prompt", "a cat",
            "--steps", "1", "--num-frames", "9", "--clips", "1", "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(out)]) == 0, capsys.readouterr().err
    plan = json.loads(out.with_suffix(".svi.json").read_text())["inputs"]["plan"]
    assert (plan["height"], plan["width"]) == (32, 64)  # 40x70 floored to 16, aspect kept
    capsys.readouterr()
    assert main([*base, "--height", "40", "--out", str(tmp_path / "b.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --height must be a positive multiple of 16") and not list(
        tmp_path.glob("b.*"))  # fmt: skip


def test_docs_table_is_the_code_table():
    docs = Path(__file__).resolve().parents[1] / "docs" / "variants.md"
    assert markdown_table() in docs.read_text(encoding="utf-8")
