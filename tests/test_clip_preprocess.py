"""Wan 2.1 CLIP image tokens: the official preprocessing (whole frame squashed to the
encoder's size, bicubic) bit-exact against a reference written from the authors' lines,
on a non-square frame; ``diffusers`` keeps the previous tokens (the processor's crop)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svi.errors import SviError
from svi.manifest import manifest_path
from svi.models.clip import official_clip_pixels
from svi.models.wan import load_wan_folder
from svi.pixels import to_signed
from svi.plan import GenerationConfig
from svi.request import GenerateRequest, run_generate
from wan_fixtures import CLIP_IMAGE_SIZE, build_tiny_wan_folder

WAN21 = "wan2.1-i2v-14b-480p"


def official_reference(frame: np.ndarray, size: int) -> torch.Tensor:
    """The authors' lines, transcribed: ``BasePipeline.preprocess_image``, then
    ``WanImageEncoder.encode_image`` with torchvision's ``Normalize`` written out
    (``tensor.sub_(mean).div_(std)`` with float32 mean / std of shape (3, 1, 1))."""
    image = torch.Tensor(np.array(frame, dtype=np.float32) * (2 / 255) - 1)
    image = image.permute(2, 0, 1).unsqueeze(0)  # preprocess_image
    videos = [image]
    videos = torch.cat(
        [F.interpolate(u, size=(size, size), mode="bicubic", align_corners=False) for u in videos]
    )
    videos = videos.mul_(0.5).add_(0.5)
    mean = torch.as_tensor([0.48145466, 0.4578275, 0.40821073], dtype=videos.dtype).view(-1, 1, 1)
    std = torch.as_tensor([0.26862954, 0.26130258, 0.27577711], dtype=videos.dtype).view(-1, 1, 1)
    return videos.sub_(mean).div_(std)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    return load_wan_folder(build_tiny_wan_folder(tmp_path_factory.mktemp("clip"), WAN21))


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A non-square frame (24 x 40): the two preprocessings see different pictures."""
    return np.random.default_rng(5).integers(0, 256, (24, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [CLIP_IMAGE_SIZE, 224])
def test_official_pixels_are_the_authors_bit_for_bit(frame: np.ndarray, size: int) -> None:
    ours = official_clip_pixels(frame[None], size)
    ref = official_reference(frame, size)
    assert ours.shape == (1, 3, size, size) and ours.dtype == torch.float32
    assert torch.equal(ours, ref)
    assert ref.max() > (1 - 0.48145466) / 0.26862954  # bicubic overshoot is kept, as theirs


def test_official_tokens_on_a_non_square_frame(comps, frame: np.ndarray) -> None:
    tokens = comps.encode_image(to_signed(frame)[None])  # the default: official
    with torch.no_grad():
        out = comps.image_encoder(
            pixel_values=official_reference(frame, CLIP_IMAGE_SIZE), output_hidden_states=True
        )
    assert torch.equal(tokens, out.hidden_states[-2])
    assert torch.equal(tokens, comps.encode_image(to_signed(frame)[None], "official"))


def test_diffusers_keeps_the_previous_tokens(comps, frame: np.ndarray) -> None:
    """The processor path as it was: uint8 frames through the folder's CLIPImageProcessor."""
    images = to_signed(frame)[None]
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arrays = list(pixels.permute(0, 2, 3, 1).numpy())
    values = comps.image_processor(images=arrays, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        before = comps.image_encoder(pixel_values=values, output_hidden_states=True)
    tokens = comps.encode_image(images, "diffusers")
    assert torch.equal(tokens, before.hidden_states[-2])
    assert not torch.allclose(tokens, comps.encode_image(images), atol=1e-3)  # a crop


def test_an_unknown_preprocessing_is_refused(comps, frame: np.ndarray) -> None:
    with pytest.raises(SviError, match="unknown CLIP preprocessing 'crop'"):
        comps.encode_image(to_signed(frame)[None], "crop")


def test_the_plan_records_it_and_a_run_uses_it(tmp_path: Path) -> None:
    from PIL import Image

    folder = build_tiny_wan_folder(tmp_path, WAN21)
    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 64, 3), np.uint8)).save(image)
    frames = {}
    for choice in (None, "diffusers"):
        out = tmp_path / f"{choice}.mp4"
        req = GenerateRequest(out=out, model=str(folder), image=image, prompt="a red disc",
                              clips=1, height=32, width=64, num_frames=5, progress=False,
                              lossless=True,
                              config=GenerationConfig(steps=1, clip_preprocess=choice))  # fmt: skip
        manifest = run_generate(req)
        plan = json.loads(manifest_path(out).read_text())["inputs"]["plan"]
        assert plan["clip_preprocess"] == (choice or "official")
        frames[choice] = manifest["clips"][0]["frames_sha256"]
    assert frames[None] != frames["diffusers"]
    with pytest.raises(SviError, match="unknown CLIP preprocessing"):
        config = GenerationConfig(clip_preprocess="center")
        req = GenerateRequest(out=tmp_path / "x.mp4", model=str(folder), image=image,
                              prompt="a", clips=1, progress=False, config=config)  # fmt: skip
        run_generate(req)
    assert not (tmp_path / "x.mp4").exists()
