"""Loading diffusers-format Wan folders: tiny folders of every layout, and broken ones."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from svi import flow
from svi.errors import SviError
from svi.models.codec import WanVAECodec
from svi.models.text import UMT5TextEncoder
from svi.models.wan import (
    WAN_LAYOUTS,
    detect_wan_variant,
    load_wan_folder,
    validate_wan_folder,
)
from svi.sampling import Experts
from wan_fixtures import CLIP_DIM, CLIP_TOKENS, TEXT_DIM, VARIANTS, build_tiny_wan_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan")
    return {v: build_tiny_wan_folder(root, v) for v in VARIANTS}


@pytest.fixture
def copy_of(folders, tmp_path):
    def make(variant: str) -> Path:
        return Path(shutil.copytree(folders[variant], tmp_path / folders[variant].name))

    return make


def _dit_inputs(comps, video: torch.Tensor) -> dict:
    """DiT inputs the way WanImageToVideoPipeline builds them, for each conditioning kind."""
    latents = comps.vae.encode(video)  # (1, C, f, h, w)
    text = comps.text_encoder.encode(["a red disc bounces over a green checkerboard"])
    noisy = torch.randn_like(latents)
    if comps.conditioning == "concat":
        mask = torch.zeros(1, 4, *latents.shape[2:])
        mask[:, :, 0] = 1.0
        hidden = torch.cat([noisy, mask, latents], dim=1)  # (1, 2C + 4, f, h, w)
        timestep = torch.tensor([700.0])
    else:  # latent_replace: frame 0 is the clean image latent, its tokens get t = 0
        hidden = noisy.clone()
        hidden[:, :, 0] = latents[:, :, 0]
        f, h, w = latents.shape[2:]
        timestep = torch.full((1, f, h // 2, w // 2), 700.0)
        timestep[:, 0] = 0.0
        timestep = timestep.flatten(1)  # (1, seq_len)
    return {
        "hidden_states": hidden,
        "timestep": timestep,
        "encoder_hidden_states": text,
        "encoder_hidden_states_image": comps.encode_image(video[:, :, 0]),
        "return_dict": False,
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_detect_variant(folders, variant):
    assert detect_wan_variant(folders[variant]) == variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_load_and_run_one_forward(folders, variant):
    comps = load_wan_folder(folders[variant], expect=variant)
    layout = WAN_LAYOUTS[variant]
    assert comps.variant == variant
    assert comps.conditioning == layout.conditioning
    assert comps.dtype == torch.float32 and comps.device.type == "cpu"
    assert isinstance(comps.vae, WanVAECodec) and comps.codec is comps.vae
    assert isinstance(comps.text_encoder, UMT5TextEncoder)
    assert comps.text_encoder.max_length == 512 and comps.text_encoder.dim == TEXT_DIM
    assert (comps.transformer_2 is not None) == layout.two_experts
    assert (comps.image_encoder is not None) == layout.clip
    assert comps.boundary_ratio == (0.9 if layout.two_experts else None)
    assert comps.model_index["_class_name"] in {"WanImageToVideoPipeline", "WanPipeline"}

    size = 16 * 4 if variant == "wan2.2-ti2v-5b" else 8 * 4
    video = torch.rand(1, 3, 9, size, size) * 2 - 1
    inputs = _dit_inputs(comps, video)
    if layout.clip:
        assert inputs["encoder_hidden_states_image"].shape == (1, CLIP_TOKENS, CLIP_DIM)
    z = comps.vae.latent_channels
    assert z == (48 if variant == "wan2.2-ti2v-5b" else 16)
    for expert in comps.experts:
        with torch.no_grad():
            out = expert(**inputs)[0]
        assert out.shape == (1, z, 3, 4, 4)
        assert torch.isfinite(out).all()


def test_load_without_expect_detects(folders):
    comps = load_wan_folder(folders["wan2.2-ti2v-5b"])
    assert comps.variant == "wan2.2-ti2v-5b" and comps.conditioning == "latent_replace"
    assert comps.model_index["expand_timesteps"] is True


def test_a14b_expert_switch_follows_the_pipeline(folders):
    def expert_for(comps, timestep: float):  # timestep = 1000 * sigma, as the pipeline's t
        experts = Experts(comps.transformer, comps.transformer_2, comps.boundary_ratio)
        sigma = torch.tensor([timestep], dtype=torch.float64) / flow.NUM_TRAIN_TIMESTEPS
        return experts.model_for(sigma)

    comps = load_wan_folder(folders["wan2.2-i2v-a14b"])
    high, low = comps.transformer, comps.transformer_2
    assert expert_for(comps, 999.0) is high
    assert expert_for(comps, 900.0) is high  # t >= boundary_ratio * 1000 -> high-noise expert
    assert expert_for(comps, 899.9) is low
    assert expert_for(comps, 0.0) is low
    single = load_wan_folder(folders["wan2.1-i2v-14b-480p"])
    assert expert_for(single, 10.0) is single.transformer


def test_480p_and_720p_share_a_layout(folders):
    # a 720p-named folder may be loaded as 480p: same architecture, only weights differ
    comps = load_wan_folder(folders["wan2.1-i2v-14b-720p"], expect="wan2.1-i2v-14b-480p")
    assert comps.variant == "wan2.1-i2v-14b-480p"


# --------------------------------------------------------------------------- failures


def test_missing_expert_named(copy_of):
    folder = copy_of("wan2.2-i2v-a14b")
    shutil.rmtree(folder / "transformer_2")
    with pytest.raises(SviError, match=r"missing transformer_2/ \(needed by wan2.2-i2v-a14b\)"):
        load_wan_folder(folder)


def test_expect_names_what_the_variant_needs(folders):
    with pytest.raises(SviError, match=r"missing transformer_2/ \(needed by wan2.2-i2v-a14b\)"):
        validate_wan_folder(folders["wan2.2-ti2v-5b"], expect="wan2.2-i2v-a14b")
    with pytest.raises(SviError, match=re.escape("holds wan2.1-i2v-14b-480p, not wan2.2-ti2v-5b")):
        validate_wan_folder(folders["wan2.1-i2v-14b-480p"], expect="wan2.2-ti2v-5b")
    with pytest.raises(SviError, match="unknown Wan variant"):
        validate_wan_folder(folders["wan2.2-ti2v-5b"], expect="wan3")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("image_encoder", "missing image_encoder/"),
        ("vae/config.json", "missing vae/config.json"),
        ("tokenizer", "missing tokenizer/"),
        ("image_processor/preprocessor_config.json", "preprocessor_config.json"),
    ],
)
def test_missing_parts_are_named(copy_of, remove, message):
    folder = copy_of("wan2.1-i2v-14b-480p")
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(SviError, match=message):
        load_wan_folder(folder, expect="wan2.1-i2v-14b-480p")


def test_bad_model_index(copy_of, tmp_path):
    folder = copy_of("wan2.2-ti2v-5b")
    (folder / "model_index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SviError, match=re.escape("model_index.json is not valid JSON")):
        load_wan_folder(folder)
    (folder / "model_index.json").unlink()
    with pytest.raises(SviError, match=re.escape("no model_index.json")):
        detect_wan_variant(folder)
    with pytest.raises(SviError, match="does not exist"):
        load_wan_folder(tmp_path / "absent")


def test_bad_component_config(copy_of):
    folder = copy_of("wan2.2-ti2v-5b")
    (folder / "vae" / "config.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(SviError, match=r"vae/config.json is not valid JSON"):
        load_wan_folder(folder, expect="wan2.2-ti2v-5b")


def test_corrupt_and_truncated_weights_name_the_file(copy_of):
    folder = copy_of("wan2.2-ti2v-5b")
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(SviError, match=r"corrupt safetensors file .*transformer/diffusion_pytorch"):
        load_wan_folder(folder)
    weights.write_bytes(b"\x00garbage")
    with pytest.raises(SviError, match="corrupt safetensors file"):
        load_wan_folder(folder)


def test_pickle_weights_are_refused(copy_of):
    folder = copy_of("wan2.2-ti2v-5b")
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    vae.rename(vae.with_suffix(".bin"))
    with pytest.raises(SviError, match="safetensors only"):
        load_wan_folder(folder)


def test_missing_shard_of_an_index(copy_of):
    folder = copy_of("wan2.2-ti2v-5b")
    tdir = folder / "transformer"
    index = {"metadata": {}, "weight_map": {"proj_out.weight": "model-00002-of-00002.safetensors"}}
    (tdir / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SviError, match=re.escape("missing shard model-00002-of-00002.safetensors")):
        validate_wan_folder(folder)


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg.update(changes)
    path.write_text(json.dumps(cfg), encoding="utf-8")


def test_text_to_video_folder_is_refused(copy_of):
    folder = copy_of("wan2.2-i2v-a14b")
    _edit_config(folder / "transformer" / "config.json", in_channels=16)
    with pytest.raises(SviError, match="text-to-video"):
        detect_wan_variant(folder)


def test_inconsistent_configs_fail_before_loading(copy_of):
    folder = copy_of("wan2.1-i2v-14b-480p")
    _edit_config(folder / "transformer" / "config.json", text_dim=64)
    with pytest.raises(SviError, match="text_dim 64"):
        validate_wan_folder(folder)
    folder2 = copy_of("wan2.2-ti2v-5b")
    _edit_config(folder2 / "transformer" / "config.json", in_channels=36)
    with pytest.raises(SviError, match="in/out channels 36/48"):
        validate_wan_folder(folder2)


def test_config_with_fewer_layers_than_the_weights_is_refused(copy_of):
    """A layer the config does not build would be dropped silently by the loader."""
    folder = copy_of("wan2.2-ti2v-5b")
    config_path = folder / "transformer" / "config.json"
    layers = json.loads(config_path.read_text())["num_layers"]
    _edit_config(config_path, num_layers=layers - 1)
    with pytest.raises(SviError, match="config does not build: blocks"):
        load_wan_folder(folder)
    _edit_config(config_path, num_layers=layers + 1)  # never stored: stays uninitialised
    with pytest.raises(SviError, match="weights missing: blocks"):
        load_wan_folder(folder)


def test_config_with_other_widths_than_the_weights_is_refused(copy_of):
    folder = copy_of("wan2.2-ti2v-5b")
    config_path = folder / "transformer" / "config.json"
    _edit_config(config_path, ffn_dim=2 * json.loads(config_path.read_text())["ffn_dim"])
    with pytest.raises(SviError, match="shapes that differ from the config"):
        load_wan_folder(folder)


@pytest.mark.parametrize("ratio", [90, 0, -0.5, "0.9", True])
def test_boundary_ratio_out_of_range_is_refused(copy_of, ratio):
    folder = copy_of("wan2.2-i2v-a14b")
    _edit_config(folder / "model_index.json", boundary_ratio=ratio)
    with pytest.raises(SviError, match=r"boundary_ratio must be a number in \(0, 1\)"):
        load_wan_folder(folder)
