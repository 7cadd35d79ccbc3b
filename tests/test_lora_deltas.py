"""Full-weight deltas of few-step distillation LoRAs (``.diff``, ``.diff_b``, ``.diff_m``,
``lora_B.bias``): files in the published key forms, built by the tests
(``lora_fixtures.py``), merge exactly as a manual merge and stack with an SVI LoRA -
per expert on Wan 2.2 A14B."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lora_fixtures import WAN_DELTAS, WAN_DELTAS_CLIP, lightx2v_lora, svi_lora
from svi.errors import SviError
from svi.lora import (
    apply_lora,
    normalize_lora_state_dict,
    parse_lora_key,
    read_lora,
    save_lora,
)
from svi.pipeline import SVIPipeline
from wan_fixtures import build_tiny_wan_folder, tiny_wan_transformer

WAN21, A14B = "wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"
CLIP = {"height": 32, "width": 32, "num_frames": 9}


def manual_merge(state: dict, pairs: dict, deltas: dict, strength: float) -> dict:
    """``W + strength * alpha / rank * B @ A``, then ``p + strength * delta``, in fp32."""
    out = {k: v.clone() for k, v in state.items()}
    for module, (a, b, alpha) in pairs.items():
        w = out[f"{module}.weight"]
        out[f"{module}.weight"] = w + (strength * (alpha / a.shape[0])) * (b.float() @ a.float())
    for param, d in deltas.items():
        out[param] = out[param] + strength * d.float()
    return out


def assert_state(model: torch.nn.Module, expected: dict) -> None:
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def _save(path: Path, sd: dict) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize("key", [*WAN_DELTAS, *WAN_DELTAS_CLIP])
def test_published_delta_keys_name_their_parameter(key: str) -> None:
    want = (WAN_DELTAS | WAN_DELTAS_CLIP)[key]
    for prefix in ("diffusion_model.", "", "model.diffusion_model."):
        parsed = parse_lora_key(prefix + key)
        assert (parsed.kind, parsed.param) == ("delta", want)


@pytest.mark.parametrize("clip", [True, False])
def test_a_lightx2v_file_merges_exactly(tmp_path: Path, clip: bool) -> None:
    model = tiny_wan_transformer(36, 16, clip=clip)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd, pairs, deltas = lightx2v_lora(model, seed=1)
    report = apply_lora(model, _save(tmp_path / "lx.safetensors", sd), scale=0.8)
    assert report.deltas == len(deltas) and report.n_modules == len(pairs)
    assert "full-weight deltas added" in report.summary()
    assert_state(model, manual_merge(before, pairs, deltas, 0.8))
    touched = {f"{m}.weight" for m in pairs} | set(deltas)
    assert {k for k in before if not torch.equal(before[k], model.state_dict()[k])} == touched


def test_peft_lora_b_bias_is_scaled_with_its_pair() -> None:
    """diffusers writes ``.diff_b`` as peft's ``lora_B.bias``, scaled like the pair."""
    model = tiny_wan_transformer(36, 16, clip=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b, bias = torch.randn(2, 16), torch.randn(16, 2), torch.randn(16)
    key = "diffusion_model.blocks.0.self_attn.q"
    apply_lora(model, {f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b,
                       f"{key}.lora_B.bias": bias, f"{key}.alpha": torch.tensor(5.0)},
               scale=0.5)  # fmt: skip
    w = before["blocks.0.attn1.to_q.weight"] + (0.5 * 5.0 / 2) * (b @ a)
    assert torch.equal(model.state_dict()["blocks.0.attn1.to_q.weight"], w)
    got = model.state_dict()["blocks.0.attn1.to_q.bias"]
    assert torch.equal(got, before["blocks.0.attn1.to_q.bias"] + (0.5 * 5.0 / 2) * bias)


def test_an_svi_lora_and_a_distillation_lora_stack(tmp_path: Path) -> None:
    pipe = SVIPipeline.from_pretrained(build_tiny_wan_folder(tmp_path, WAN21), **CLIP)
    dit = pipe.bundle.transformer
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    svi_sd, svi_pairs, _ = svi_lora(dit, seed=2)
    lx_sd, lx_pairs, lx_deltas = lightx2v_lora(dit, seed=3)
    pipe.load_lora(_save(tmp_path / "svi.safetensors", svi_sd), 0.7)
    pipe.load_lora(_save(tmp_path / "lx.safetensors", lx_sd), 1.0)
    expected = manual_merge(manual_merge(before, svi_pairs, {}, 0.7), lx_pairs, lx_deltas, 1.0)
    assert_state(dit, expected)
    assert [(e["scale"], e["expert"]) for e in pipe.loras] == [(0.7, "high"), (1.0, "high")]


def test_a14b_stacks_per_expert(tmp_path: Path) -> None:
    pipe = SVIPipeline.from_pretrained(build_tiny_wan_folder(tmp_path, A14B), **CLIP)
    high, low = pipe.bundle.transformer, pipe.bundle.transformer_2
    before = {n: {k: v.clone() for k, v in m.state_dict().items()}
              for n, m in (("high", high), ("low", low))}  # fmt: skip
    files, merged = {}, {"high": before["high"], "low": before["low"]}
    for expert, dit, seed in (("high", high, 4), ("low", low, 5)):
        for name, (sd, pairs, deltas), scale in (
            ("svi", svi_lora(dit, seed), 1.0),
            ("lx", lightx2v_lora(dit, seed + 10), 0.9),
        ):
            files[(expert, name)] = _save(tmp_path / f"{name}_{expert}_noise.safetensors", sd)
            pipe.load_lora(files[(expert, name)], scale, expert=expert)
            merged[expert] = manual_merge(merged[expert], pairs, deltas, scale)
    assert_state(high, merged["high"])
    assert_state(low, merged["low"])


def test_deltas_are_checked_before_anything_changes(tmp_path: Path) -> None:
    model = tiny_wan_transformer(36, 16, clip=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd, _, _ = lightx2v_lora(model, seed=6)
    cases = [
        ({"diffusion_model.blocks.0.norm3.diff": torch.zeros(15)}, r"shape \(15,\) but"),
        ({"diffusion_model.img_emb.proj.0.diff": torch.zeros(16)}, "does not have"),
        ({"diffusion_model.blocks.0.norm1.diff": torch.zeros(16)}, "does not have"),
        ({"diffusion_model.blocks.0.modulation.diff_b": torch.zeros(6, 16)}, "no bias"),
        ({"diffusion_model.head.head.diff_b": torch.full((64,), float("nan"))}, "not finite"),
    ]
    for extra, pattern in cases:
        with pytest.raises(SviError, match=pattern):
            apply_lora(model, {**sd, **extra})
        assert_state(model, before)
    with pytest.raises(SviError, match="apply it merged"):
        apply_lora(model, sd, merge=False)
    for refuse in (normalize_lora_state_dict, lambda s: save_lora(tmp_path / "x.safetensors", s)):
        with pytest.raises(SviError, match="full-weight delta"):
            refuse(sd)
    assert_state(model, before)
    contents = read_lora(sd)
    assert contents.form == "wan" and len(contents.deltas) == len(WAN_DELTAS)
