"""LoRA files as released and as trained: wrapper prefixes, folders of shards, extra
modules (SVI-Dance's ``dwpose_embedding``) and their fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from svi.errors import SviError
from svi.fingerprint import fingerprint_files
from svi.lora import (
    apply_lora,
    lora_files,
    lora_fingerprint,
    normalize_lora_state_dict,
    parse_lora_key,
    read_lora,
    read_lora_metadata,
    remove_lora,
    save_lora,
)
from test_lora import RANK, random_lora, target_modules, tiny_model, to_form


def svi_lora() -> dict[str, torch.Tensor]:
    """An SVI-form LoRA (``blocks.N.self_attn.q.lora_A.default.weight``, no alphas)."""
    return to_form(random_lora(tiny_model(), target_modules()), "svi", alpha=None)


def merged(lora) -> dict[str, torch.Tensor]:
    model = tiny_model()
    apply_lora(model, lora, scale=0.8)
    return model.state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def write_shards(folder: Path, sd: dict[str, torch.Tensor], n: int, **meta: str) -> list[Path]:
    """``sd`` split round-robin into ``n`` shards; ``meta`` goes into the first one."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    paths = []
    for i in range(n):
        path = folder / f"lora-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in keys[i::n]}
        save_file(part, str(path), metadata={"format": "pt", **(meta if i == 0 else {})})
        paths.append(path)
    return paths


# ----------------------------------------------------------------- wrapper prefixes

# Everything that training, wrapping and exporting puts in front of the module path.
PREFIXES = (
    *("transformer.", "diffusion_model.", "base_model.model.", "pipe.dit.", "model.", "dit."),
    *("_forward_module.", "_forward_module.pipe.dit.", "module._forward_module.model."),
    *("module.", "_orig_mod.", "pipe.dit._orig_mod."),
)
# Wrapper segments inside the path (FSDP, torch.compile and checkpointing of blocks).
INSIDE = {
    "fsdp+compile": lambda k: k.replace("blocks.0.", "_fsdp_wrapped_module.blocks.0._orig_mod."),
    "checkpointed": lambda k: k.replace(".ffn.", "._checkpoint_wrapped_module.ffn."),
}


@pytest.mark.parametrize("wrapper", [*PREFIXES, *INSIDE])
def test_wrapped_keys_merge_like_bare_keys(wrapper: str) -> None:
    bare = svi_lora()
    wrap = INSIDE.get(wrapper, lambda k: wrapper + k)
    wrapped = {wrap(k): v for k, v in bare.items()}
    assert wrapped.keys() != bare.keys()
    assert_same_weights(merged(wrapped), merged(bare))
    assert read_lora(wrapped).form == "svi"


def test_lightning_key_parses_to_the_diffusers_module() -> None:
    key = "_forward_module.pipe.dit.blocks.0.self_attn.q.lora_A.default.weight"
    assert parse_lora_key(key) == ("blocks.0.attn1.to_q", "A", "svi", "default", None)
    musubi = "module.lora_unet_blocks_1_ffn_2.lora_up.weight"
    assert parse_lora_key(musubi) == ("blocks.1.ffn.net.2", "B", "musubi", None, None)


# ----------------------------------------------------------------- folders of shards


def test_folder_of_shards_equals_the_single_file(tmp_path: Path) -> None:
    sd = to_form(random_lora(tiny_model(), target_modules()), "wan", alpha=6.0)
    single = tmp_path / "one.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(single))
    folder = tmp_path / "shards"
    shards = write_shards(folder, sd, 3, training='{"padding": "anchor"}')
    assert lora_files(folder) == shards and lora_files(single) == [single]

    assert_same_weights(merged(folder), merged(single))
    report = apply_lora(tiny_model(), folder)
    assert report.source == str(folder) and report.lora_scales == (6.0 / RANK,)
    assert report.n_modules == len(target_modules())
    assert read_lora_metadata(folder) == {"format": "pt", "training": {"padding": "anchor"}}


def test_same_key_in_two_shards_is_an_error(tmp_path: Path) -> None:
    sd = svi_lora()
    a, b = write_shards(tmp_path, sd, 2)
    key = sorted(sd)[0]
    save_file({key: sd[key], **dict(load_file(b))}, str(b))
    with pytest.raises(SviError, match="two shards") as err:
        apply_lora(tiny_model(), tmp_path)
    assert key in str(err.value) and a.name in str(err.value) and b.name in str(err.value)


def test_same_module_under_two_prefixes_names_both_shards(tmp_path: Path) -> None:
    """E.g. a training output folder with one LoRA saved in two key forms."""
    sd = svi_lora()
    save_file(sd, str(tmp_path / "a.safetensors"))
    save_file({"pipe.dit." + k: v for k, v in sd.items()}, str(tmp_path / "b.safetensors"))
    with pytest.raises(SviError, match="duplicates") as err:
        apply_lora(tiny_model(), tmp_path)
    assert "(in a.safetensors)" in str(err.value) and "(in b.safetensors)" in str(err.value)


def test_folder_without_safetensors_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SviError, match=r"holds no \.safetensors"):
        apply_lora(tiny_model(), tmp_path)
    (tmp_path / ".partial.safetensors").write_bytes(b"")  # hidden: not a shard
    (tmp_path / "mp_rank_00_model_states.pt").write_bytes(b"")
    with pytest.raises(SviError, match=r"found mp_rank_00_model_states\.pt"):
        lora_fingerprint(tmp_path)
    with pytest.raises(SviError, match="not found"):
        read_lora_metadata(tmp_path / "missing")


def test_shards_with_disagreeing_metadata_are_an_error(tmp_path: Path) -> None:
    sd = svi_lora()
    a, b = write_shards(tmp_path, sd, 2, padding='"anchor"')
    save_file(load_file(b), str(b), metadata={"format": "pt", "padding": '"zero"'})
    for read in (read_lora_metadata, lambda p: apply_lora(tiny_model(), p)):
        with pytest.raises(SviError, match="disagree on header metadata 'padding'") as err:
            read(tmp_path)
        assert a.name in str(err.value) and b.name in str(err.value)


def test_folder_fingerprint_covers_every_shard(tmp_path: Path) -> None:
    sd = svi_lora()
    shards = write_shards(tmp_path / "f", sd, 3)
    fp = lora_fingerprint(tmp_path / "f")
    fast = fingerprint_files(lora_files(tmp_path / "f"), whole=True)
    assert len(fp) == 16 and fp == lora_fingerprint(tmp_path / "f")

    part = load_file(shards[1])
    key = sorted(part)[0]
    part[key] = part[key] + 1e-3  # same size, same header: only the data differ
    save_file(part, str(shards[1]), metadata={"format": "pt"})
    assert lora_fingerprint(tmp_path / "f") != fp
    assert fingerprint_files(lora_files(tmp_path / "f"), whole=True) != fast

    one = tmp_path / "one"  # one shard in a folder: the digest of the file itself
    one.mkdir()
    shards[0].rename(one / shards[0].name)
    assert lora_fingerprint(one) == lora_fingerprint(one / shards[0].name)


# --------------------------------------------------------------- extra module weights


def pose_encoder(dim: int = 16) -> nn.Sequential:
    """A tiny stand-in for SVI-Dance's Conv3d stack: pose video (3 ch) to the DiT width."""
    return nn.Sequential(
        nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1),
        nn.SiLU(),
        nn.Conv3d(8, 8, 3, stride=(2, 2, 2), padding=1),
        nn.SiLU(),
        nn.Conv3d(8, dim, 3, stride=(2, 1, 1), padding=1),
    )


def dance_model(seed: int = 0) -> nn.Module:
    model = tiny_model(seed)
    torch.manual_seed(100 + seed)
    model.dwpose_embedding = pose_encoder()
    return model


def pose_weights(prefix: str = "pipe.dit.", seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {f"{prefix}dwpose_embedding.{k}": v for k, v in pose_encoder().state_dict().items()}


def dance_lora(prefix: str = "pipe.dit.") -> dict[str, torch.Tensor]:
    lora = to_form(random_lora(tiny_model(), target_modules()), "svi", alpha=None)
    return {**{prefix + k: v for k, v in lora.items()}, **pose_weights(prefix)}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("prefix", ["", "pipe.dit.", "_forward_module.pipe.dit."])
def test_dance_file_loads_the_pose_encoder(tmp_path: Path, prefix: str) -> None:
    sd = dance_lora(prefix)
    path = tmp_path / "dance.safetensors"
    save_file(sd, str(path))
    contents = read_lora(path)
    assert sorted(contents.extras) == sorted(pose_weights(""))
    assert len(contents.entries) == len(target_modules())

    model = dance_model()
    report = apply_lora(model, path, scale=0.8)
    assert report.extras == "dwpose_embedding (6 tensors)"
    assert report.summary().endswith("loaded weights of dwpose_embedding (6 tensors)")
    for key, value in pose_weights("").items():  # loaded as they are, strength aside
        assert torch.equal(model.get_parameter(key), value), key
    # The LoRA pairs merge exactly as they do without the pose encoder.
    plain = {k: v for k, v in sd.items() if "dwpose" not in k}
    assert_same_weights(
        {k: v for k, v in model.state_dict().items() if "dwpose" not in k}, merged(plain)
    )


def test_dance_file_in_shards_loads_the_pose_encoder(tmp_path: Path) -> None:
    sd = dance_lora()
    write_shards(tmp_path, sd, 3)
    model, reference = dance_model(), dance_model()
    apply_lora(model, tmp_path)
    apply_lora(reference, sd)
    assert_same_weights(model.state_dict(), reference.state_dict())


def test_dance_file_is_refused_by_a_model_without_pose_encoder(tmp_path: Path) -> None:
    path = tmp_path / "dance.safetensors"
    save_file(dance_lora(), str(path))
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(SviError) as err:
        apply_lora(model, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "holds weights of modules this model does not have: dwpose_embedding (6 tensors)" in msg
    assert "a Dance LoRA needs the pose encoder" in msg
    assert_same_weights(model.state_dict(), before)  # nothing merged


def test_extra_weights_must_fit_exactly() -> None:
    model = dance_model()
    before = snapshot(model)
    wrong = dance_lora()
    key = "pipe.dit.dwpose_embedding.2.weight"
    wrong[key] = torch.zeros(8, 8, 3, 3, 1)
    shapes = r"dwpose_embedding\.2\.weight.*\(8, 8, 3, 3, 1\).*\(8, 8, 3, 3, 3\)"
    with pytest.raises(SviError, match=shapes):
        apply_lora(model, wrong)
    partial = dance_lora()
    del partial["pipe.dit.dwpose_embedding.4.bias"]
    with pytest.raises(SviError, match=r"model has 4\.bias that the file lacks"):
        apply_lora(model, partial)
    surplus = {**dance_lora(), "pipe.dit.dwpose_embedding.6.weight": torch.zeros(1)}
    with pytest.raises(SviError, match=r"file has 6\.weight that the model lacks"):
        apply_lora(model, surplus)
    assert_same_weights(model.state_dict(), before)


def test_remove_lora_restores_the_pose_encoder() -> None:
    model = dance_model()
    before = snapshot(model)
    report = apply_lora(model, dance_lora(), merge=False, adapter_name="dance")
    assert report.extras == "dwpose_embedding (6 tensors)"
    assert torch.equal(
        model.get_parameter("dwpose_embedding.0.weight"),
        pose_weights("")["dwpose_embedding.0.weight"],
    )
    with pytest.raises(SviError, match="attached LoRA adapter 'dance'"):
        apply_lora(model, dance_lora(), merge=False, adapter_name="other")
    with pytest.raises(SviError, match="attached LoRA adapter 'dance'"):
        apply_lora(model, dance_lora())
    remove_lora(model, "dance")
    after = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items()}
    assert_same_weights({k: v for k, v in after.items() if ".lora_" not in k}, before)


def test_extra_weights_are_never_dropped_silently(tmp_path: Path) -> None:
    sd = dance_lora()
    with pytest.raises(SviError, match=r"dwpose_embedding \(6 tensors\).*read_lora"):
        normalize_lora_state_dict(sd)
    with pytest.raises(SviError, match="LoRA pairs only"):
        save_lora(tmp_path / "x.safetensors", sd)
    with pytest.raises(SviError, match="duplicates"):
        apply_lora(dance_model(), {**sd, **pose_weights("model.")})
    # Plain weights of the base DiT's own modules are not extra modules.
    base = {**svi_lora(), "blocks.0.self_attn.q.weight": torch.zeros(16, 16)}
    with pytest.raises(SviError, match="plain weights of the base model"):
        read_lora(base)


def test_pose_encoder_alone_loads_merged_only() -> None:
    model = dance_model()
    report = apply_lora(model, pose_weights())
    assert report.n_modules == 0 and report.extras == "dwpose_embedding (6 tensors)"
    assert torch.equal(
        model.get_parameter("dwpose_embedding.4.bias"), pose_weights("")["dwpose_embedding.4.bias"]
    )
    with pytest.raises(SviError, match="no LoRA pairs"):
        apply_lora(dance_model(), pose_weights(), merge=False)
