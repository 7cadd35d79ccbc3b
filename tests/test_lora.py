"""LoRA key forms, merge / adapter equivalence, training LoRAs, save / load round trips."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from svi.errors import SviError
from svi.lora import (
    WAN_LORA_TARGETS,
    add_training_lora,
    apply_lora,
    lora_fingerprint,
    lora_parameters,
    lora_state_dict,
    normalize_lora_state_dict,
    parse_lora_key,
    read_lora_metadata,
    remove_lora,
    save_lora,
    set_lora_scale,
)

RANK = 4
ALPHA = 6.0  # != RANK so that alpha / rank matters

# Written out by hand (not taken from svi.lora) so the test checks the mapping.
WAN_NAMES = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
WAN_TOP = {
    "proj_out": "head.head",
    "patch_embedding": "patch_embedding",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
}


def tiny_model(seed: int = 0, head_dim: int = 8, num_layers: int = 2) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=head_dim,
        in_channels=10,
        out_channels=3,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=num_layers,
        image_dim=None,
    )
    return model.eval()


def model_inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 10, 2, 4, 4, generator=g),  # (B, C, F, H, W)
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 5, 16, generator=g),
    }


@torch.no_grad()
def forward(model: torch.nn.Module) -> torch.Tensor:
    return model(**model_inputs(), return_dict=False)[0]


def wan_name(module: str) -> str:
    if module in WAN_TOP:
        return WAN_TOP[module]
    _, idx, rest = module.split(".", 2)
    return f"blocks.{idx}.{WAN_NAMES[rest]}"


def target_modules(num_layers: int = 2) -> list[str]:
    blocks = [f"blocks.{i}.{t}" for i in range(num_layers) for t in WAN_LORA_TARGETS]
    return [*blocks, "proj_out", "patch_embedding", "condition_embedder.time_proj"]


def random_lora(model: torch.nn.Module, modules: list[str], rank: int = RANK, seed: int = 3):
    """{module: (A, B)} with shapes fitting ``model``'s weights (conv included)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in modules:
        w = model.get_submodule(m).weight
        a = torch.randn(rank, *w.shape[1:], generator=g) * 0.2
        b = torch.randn(w.shape[0], rank, *([1] * (w.ndim - 2)), generator=g) * 0.2
        out[m] = (a, b)
    return out


def to_form(lora: dict, form: str, alpha: float | None = ALPHA) -> dict[str, torch.Tensor]:
    """Write {module: (A, B)} in one of the key forms found in the wild."""
    sd: dict[str, torch.Tensor] = {}
    for m, (a, b) in lora.items():
        if form in ("diffusers", "diffusers_bare"):
            name = ("transformer." if form == "diffusers" else "") + m
            down, up = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
        elif form in ("wan", "comfyui"):
            name = f"diffusion_model.{wan_name(m)}"
            mat = ("lora_A", "lora_B") if form == "wan" else ("lora_down", "lora_up")
            down, up = f"{name}.{mat[0]}.weight", f"{name}.{mat[1]}.weight"
        elif form.startswith("svi"):
            prefix = {"svi": "", "svi_pipe": "pipe.dit.", "svi_model": "model.", "svi_dit": "dit."}
            name = prefix[form] + wan_name(m)
            down, up = f"{name}.lora_A.default.weight", f"{name}.lora_B.default.weight"
        elif form == "musubi":
            name = "lora_unet_" + wan_name(m).replace(".", "_")
            down, up = f"{name}.lora_down.weight", f"{name}.lora_up.weight"
        else:
            raise AssertionError(form)
        sd[down], sd[up] = a, b
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def expected_weights(model, lora, factor: float) -> dict[str, torch.Tensor]:
    out = {}
    for m, (a, b) in lora.items():
        w = model.get_submodule(m).weight.detach().double()
        delta = (b.double().flatten(1) @ a.double().flatten(1)).reshape(w.shape)
        out[m] = w + factor * delta
    return out


def assert_merged(before, after, lora, factor: float) -> None:
    expected = expected_weights(before, lora, factor)
    touched = {f"{m}.weight" for m in lora}
    for m, w in expected.items():
        got = after.get_submodule(m).weight.detach().double()
        assert torch.allclose(got, w, atol=1e-6, rtol=1e-6), m
    for name, p in after.state_dict().items():
        if name not in touched:
            assert torch.equal(p, before.state_dict()[name]), name


ALPHA_FORMS = ["diffusers", "diffusers_bare", "wan", "comfyui", "musubi"]
ALL_FORMS = [*ALPHA_FORMS, "svi", "svi_pipe", "svi_model", "svi_dit"]


@pytest.mark.parametrize("form", ALL_FORMS)
def test_merge_each_form_matches_manual_delta(form: str) -> None:
    base = tiny_model()
    model = tiny_model()
    modules = target_modules()
    lora = random_lora(base, modules)
    alpha = ALPHA if form in ALPHA_FORMS else None  # SVI files carry no alphas
    report = apply_lora(model, to_form(lora, form, alpha), scale=0.7)
    factor = 0.7 * ((alpha or RANK) / RANK)
    assert_merged(base, model, lora, factor)
    assert report.merged and report.n_modules == len(modules)
    assert report.ranks == (RANK,)
    assert report.lora_scales == ((alpha or RANK) / RANK,)
    expected_form = {"diffusers_bare": "diffusers", "comfyui": "wan"}.get(form, form)
    assert report.form == expected_form.split("_")[0]


def test_adapter_matches_merge_and_scales() -> None:
    base = tiny_model()
    base_out = forward(base)
    modules = target_modules()
    lora = random_lora(base, modules)
    # Non-uniform rank and alpha exercise peft's rank / alpha patterns.
    a, b = lora["blocks.1.attn2.to_v"]
    lora["blocks.1.attn2.to_v"] = (torch.cat([a, a[:2]]), torch.cat([b, b[:, :2]], 1))
    sd = to_form(lora, "comfyui")
    sd["diffusion_model.blocks.0.ffn.2.alpha"] = torch.tensor(2.0)

    merged = tiny_model()
    apply_lora(merged, sd, scale=0.8)
    adapted = tiny_model()
    report = apply_lora(adapted, sd, scale=0.8, merge=False, adapter_name="svi")
    assert not report.merged and report.adapter_name == "svi"
    assert report.ranks == (RANK, RANK + 2)
    assert torch.allclose(forward(adapted), forward(merged), atol=1e-5)
    assert not torch.allclose(forward(adapted), base_out, atol=1e-3)

    set_lora_scale(adapted, "svi", 0.0)
    assert torch.allclose(forward(adapted), base_out, atol=1e-6)
    set_lora_scale(adapted, "svi", 0.8)
    assert torch.allclose(forward(adapted), forward(merged), atol=1e-5)
    remove_lora(adapted, "svi")
    assert torch.allclose(forward(adapted), base_out, atol=1e-6)
    with pytest.raises(SviError, match="no LoRA adapter"):
        set_lora_scale(adapted, "svi", 1.0)


def test_zero_match_is_an_error(tmp_path) -> None:
    model = tiny_model()
    other = tiny_model(num_layers=4)
    lora = random_lora(other, ["blocks.3.attn1.to_q", "blocks.2.ffn.net.2"])
    path = tmp_path / "far.safetensors"
    save_lora(path, to_form(lora, "diffusers"))
    with pytest.raises(SviError, match="matched no module") as err:
        apply_lora(model, path)
    assert "far.safetensors" in str(err.value)


def test_missing_module_names_key_and_module() -> None:
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = random_lora(tiny_model(num_layers=3), ["blocks.0.attn1.to_q", "blocks.2.attn1.to_k"])
    with pytest.raises(SviError, match=r"blocks\.2\.self_attn\.k\.lora_A.*blocks\.2\.attn1\.to_k"):
        apply_lora(model, to_form(lora, "wan"))
    for k, v in model.state_dict().items():  # nothing half-applied
        assert torch.equal(v, before[k])


def test_shape_mismatch_names_key_and_shapes() -> None:
    model = tiny_model()
    lora = random_lora(model, ["blocks.0.attn1.to_q", "blocks.0.ffn.net.2"])
    a, b = lora["blocks.0.ffn.net.2"]
    lora["blocks.0.ffn.net.2"] = (a[:, :16], b)  # in-features 16, weight wants 32
    with pytest.raises(SviError, match=r"blocks\.0\.ffn\.2\.lora_A.*\(4, 16\).*\(16, 32\)"):
        apply_lora(model, to_form(lora, "wan"))
    a, b = lora["blocks.0.attn1.to_q"]
    bad = {"blocks.0.attn1.to_q.lora_A.weight": a, "blocks.0.attn1.to_q.lora_B.weight": b[:, :3]}
    with pytest.raises(SviError, match=r"to_q\.lora_A.*rank mismatch"):
        apply_lora(model, bad)


def test_lora_of_another_model_is_rejected() -> None:
    model = tiny_model()
    wide = tiny_model(head_dim=16)  # hidden size 32 instead of 16
    lora = random_lora(wide, target_modules())
    for form in ("diffusers", "svi_pipe"):
        with pytest.raises(SviError, match="does not fit"):
            apply_lora(model, to_form(lora, form), merge=False)
    assert not getattr(model, "peft_config", {})


def test_bad_files_raise_svi_error(tmp_path) -> None:
    model = tiny_model()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(SviError, match="safetensors"):
        apply_lora(model, junk)
    pickled = tmp_path / "lora.pt"
    torch.save({"blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 16)}, pickled)
    with pytest.raises(SviError, match="safetensors"):
        apply_lora(model, pickled)
    with pytest.raises(SviError, match="not found"):
        apply_lora(model, tmp_path / "missing.safetensors")
    with pytest.raises(SviError, match="empty"):
        apply_lora(model, {})


@pytest.mark.parametrize(
    ("keys", "pattern"),
    [
        (["blocks.0.attn1.to_q.lora_A.weight", "blocks.0.self_attn.k.lora_B.weight"], "mixes"),
        (["blocks.0.self_attn.norm_q.lora_A.weight"], "not a LoRA target"),
        (["head.modulation.lora_A.weight"], "not a LoRA target"),
        (["blocks.0.self_attn.q.diff_b"], "full-weight delta.*read_lora"),
        (["blocks.0.self_attn.q.lora_A.bias"], "down matrix has no bias"),
        (["blocks.0.self_attn.q.weight"], "unrecognised"),
        (["lora_unet_blocks_0_bogus.lora_down.weight"], "musubi"),
        (["blocks.0.attn1.to_q.lora_A.weight"], "no B matrix"),
        (["a.lora_A.default.weight", "b.lora_A.other.weight"], "several adapters"),
    ],
)
def test_normalise_rejects_bad_keys(keys: list[str], pattern: str) -> None:
    sd = {k: torch.zeros(2, 16) for k in keys}
    with pytest.raises(SviError, match=pattern) as err:
        normalize_lora_state_dict(sd)
    assert "\n" not in str(err.value)


def test_training_lora_only_lora_trains() -> None:
    model = tiny_model().train()
    base_out = forward(model)
    add_training_lora(model, rank=4, alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.svi." in n or ".lora_B.svi." in n for n in trainable)
    assert len(trainable) == 2 * 2 * len(WAN_LORA_TARGETS)
    params = list(lora_parameters(model))
    assert {id(p) for p in params} == {id(p) for p in model.parameters() if p.requires_grad}
    assert torch.equal(forward(model), base_out)  # B = 0 at init

    opt = torch.optim.AdamW(params, lr=1e-2)
    loss = model(**model_inputs(), return_dict=False)[0].square().mean()
    loss.backward()
    opt.step()
    assert not torch.allclose(forward(model), base_out, atol=1e-6)

    sd = lora_state_dict(model)
    assert "transformer.blocks.0.attn1.to_q.lora_A.weight" in sd
    assert float(sd["transformer.blocks.1.ffn.net.2.alpha"]) == 8.0
    entries = normalize_lora_state_dict(sd)
    assert set(entries) == {f"blocks.{i}.{t}" for i in range(2) for t in WAN_LORA_TARGETS}
    assert {e.scale for e in entries.values()} == {2.0}
    with pytest.raises(SviError, match="already in use"):
        add_training_lora(model, rank=4, alpha=8)


def trained_lora_state_dict() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = tiny_model()
    add_training_lora(model, rank=4, alpha=6)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(0, 0.2)
    return model, lora_state_dict(model)


def test_save_both_forms_round_trip(tmp_path) -> None:
    trained, sd = trained_lora_state_dict()
    reference = normalize_lora_state_dict(sd)
    paths = {
        f: save_lora(tmp_path / f"l_{f}.safetensors", sd, form=f) for f in ("diffusers", "wan")
    }

    from safetensors.torch import load_file

    wan_keys = load_file(paths["wan"])
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in wan_keys
    assert float(wan_keys["diffusion_model.blocks.1.ffn.2.alpha"]) == 6.0
    peft_config = read_lora_metadata(paths["diffusers"])["lora_adapter_metadata"]
    assert peft_config["transformer.r"] == 4 and peft_config["transformer.lora_alpha"] == 6.0

    # diffusers -> wan -> normalise: identical tensors and scales.
    again = normalize_lora_state_dict(load_file(paths["wan"]))
    assert set(again) == set(reference)
    for m, e in reference.items():
        assert torch.equal(again[m].down, e.down) and torch.equal(again[m].up, e.up)
        assert again[m].scale == e.scale == 1.5

    merged = {}
    for form, path in [("memory", sd), *paths.items()]:
        model = tiny_model()
        report = apply_lora(model, path, scale=0.9)
        assert report.lora_scales == (1.5,), form
        merged[form] = model.state_dict()
    for form in paths:
        for k, v in merged["memory"].items():
            assert torch.equal(merged[form][k], v), (form, k)
    # The merged model reproduces the trained adapter.
    set_lora_scale(trained, "svi", 0.9)
    model = tiny_model()
    apply_lora(model, paths["wan"], scale=0.9)
    assert torch.allclose(forward(model), forward(trained.eval()), atol=1e-5)


def test_files_load_in_diffusers_own_loader(tmp_path) -> None:
    _, sd = trained_lora_state_dict()
    ours = tiny_model()
    apply_lora(ours, sd)
    expected = forward(ours)

    save_lora(tmp_path / "d" / "lora.safetensors", sd, form="diffusers")
    model = tiny_model()
    model.load_lora_adapter(
        str(tmp_path / "d"),
        weight_name="lora.safetensors",
        prefix="transformer",
        local_files_only=True,
    )
    assert torch.allclose(forward(model), expected, atol=1e-5)

    save_lora(tmp_path / "w.safetensors", sd, form="wan")
    converted = WanPipeline.lora_state_dict(load_file(tmp_path / "w.safetensors"))
    model = tiny_model()
    model.load_lora_adapter(converted, prefix="transformer")
    assert torch.allclose(forward(model), expected, atol=1e-5)


def test_metadata_round_trip_and_fingerprint(tmp_path) -> None:
    _, sd = trained_lora_state_dict()
    meta = {
        "base_preset": "tiny-world",
        "rank": 4,
        "alpha": 6.0,
        "training": {"lr": 1e-4, "p_clean": 0.2, "targets": list(WAN_LORA_TARGETS)},
    }
    path = save_lora(tmp_path / "m.safetensors", sd, form="wan", metadata=meta)
    read = read_lora_metadata(path)
    assert {k: read[k] for k in meta} == meta
    assert read["format"] == "pt" and read["svi_lora_form"] == "wan"
    with pytest.raises(SviError, match="reserved"):
        save_lora(tmp_path / "x.safetensors", sd, metadata={"format": "x"})

    fp = lora_fingerprint(path)
    assert len(fp) == 16 and fp == lora_fingerprint(path)
    other = save_lora(tmp_path / "n.safetensors", sd, form="wan", metadata={**meta, "rank": 5})
    assert lora_fingerprint(other) != fp


def test_save_wan_form_rejects_modules_without_wan_name() -> None:
    sd = {
        "transformer.blocks.0.attn1.norm_q.lora_A.weight": torch.zeros(2, 16),
        "transformer.blocks.0.attn1.norm_q.lora_B.weight": torch.zeros(16, 2),
    }
    with pytest.raises(SviError, match="no original-Wan name"):
        save_lora("/nonexistent/never.safetensors", sd, form="wan")


BLOCK_TARGETS = sorted(WAN_NAMES)
PREFIX_OF_FORM = {
    "diffusers": ["", "transformer."],
    "peft": ["", "transformer.", "base_model.model."],
    "wan": ["", "diffusion_model."],
    "svi": ["", "pipe.dit.", "model.", "dit.", "diffusion_model."],
    "musubi": ["lora_unet_"],
}


@given(
    block=st.integers(0, 59),
    target=st.sampled_from(BLOCK_TARGETS),
    form=st.sampled_from(sorted(PREFIX_OF_FORM)),
    data=st.data(),
)
def test_key_normalisation_property(block: int, target: str, form: str, data) -> None:
    canonical = f"blocks.{block}.{target}"
    prefix = data.draw(st.sampled_from(PREFIX_OF_FORM[form]))
    kind = data.draw(st.sampled_from(["A", "B", "alpha"]))
    wan = wan_name(canonical)
    if form in ("diffusers", "peft"):
        path = prefix + canonical
    elif form == "musubi":
        path = prefix + wan.replace(".", "_")
    else:
        path = prefix + wan
    adapter = data.draw(st.sampled_from(["default", "svi"])) if form in ("peft", "svi") else None
    if kind == "alpha":
        key = f"{path}.alpha"
    else:
        pair = ("lora_A", "lora_B")
        if form in ("wan", "musubi"):
            pair = data.draw(st.sampled_from([("lora_A", "lora_B"), ("lora_down", "lora_up")]))
        mat = pair[0] if kind == "A" else pair[1]
        key = f"{path}.{mat}.{adapter}.weight" if adapter else f"{path}.{mat}.weight"
    parsed = parse_lora_key(key)
    assert parsed.module == canonical
    assert parsed.kind == kind
    if kind != "alpha":
        assert parsed.form == form
        assert parsed.adapter == adapter


def test_merge_bf16_and_under_a_training_adapter() -> None:
    modules = ["blocks.0.attn1.to_q", "proj_out"]
    base, model = tiny_model(), tiny_model()
    for m in modules:
        base.get_submodule(m).to(torch.bfloat16)
        model.get_submodule(m).to(torch.bfloat16)
    add_training_lora(model, rank=2, alpha=2)  # wraps the targets in peft layers
    lora = random_lora(tiny_model(), modules)
    apply_lora(model, to_form(lora, "svi_pipe", alpha=None))
    for m, (a, b) in lora.items():
        w = base.get_submodule(m).weight
        want = (w.float() + b @ a).to(torch.bfloat16)
        got = model.get_submodule(m)
        got = got.get_base_layer() if hasattr(got, "get_base_layer") else got
        assert got.weight.dtype == torch.bfloat16 and torch.equal(got.weight, want)
    with pytest.raises(SviError, match="already in use"):
        apply_lora(model, to_form(lora, "svi"), merge=False, adapter_name="svi")


def test_reads_diffusers_save_lora_adapter_folder(tmp_path) -> None:
    trained, sd = trained_lora_state_dict()
    trained.save_lora_adapter(str(tmp_path), adapter_name="svi")  # diffusers' own writer
    merged = tiny_model()
    report = apply_lora(merged, tmp_path)  # folder with pytorch_lora_weights.safetensors
    assert report.lora_scales == (1.5,) and report.form == "diffusers"
    reference = tiny_model()
    apply_lora(reference, sd)
    for k, v in reference.state_dict().items():
        assert torch.equal(merged.state_dict()[k], v), k
