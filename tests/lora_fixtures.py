"""LoRA files in the key forms of published few-step distillation LoRAs, for tests.

``lightx2v_lora`` builds a LightX2V-style state dict (``diffusion_model.`` keys,
``lora_down/up`` + ``.alpha`` pairs, ``.diff`` / ``.diff_b`` / ``.diff_m`` deltas) and
``svi_lora`` an SVI-release-style one (``pipe.dit.`` + peft ``.default`` keys) for a
tiny ``WanTransformer3DModel``; both also return what a manual merge needs.
"""

from __future__ import annotations

import torch

# Written out by hand (not taken from svi.lora): original-Wan module -> diffusers module.
WAN_PAIRS = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
WAN_PAIRS_CLIP = {"cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj"}
# Delta keys of the published files (LightX2V, ComfyUI extractions) -> the diffusers
# parameter each adds to.
WAN_DELTAS = {
    "blocks.0.diff_m": "blocks.0.scale_shift_table",
    "blocks.0.norm3.diff": "blocks.0.norm2.weight",
    "blocks.0.norm3.diff_b": "blocks.0.norm2.bias",
    "blocks.0.self_attn.norm_q.diff": "blocks.0.attn1.norm_q.weight",
    "blocks.0.self_attn.norm_k.diff": "blocks.0.attn1.norm_k.weight",
    "blocks.0.cross_attn.norm_q.diff": "blocks.0.attn2.norm_q.weight",
    "blocks.0.self_attn.q.diff_b": "blocks.0.attn1.to_q.bias",
    "blocks.0.self_attn.o.diff_b": "blocks.0.attn1.to_out.0.bias",
    "blocks.0.cross_attn.v.diff_b": "blocks.0.attn2.to_v.bias",
    "blocks.0.ffn.0.diff_b": "blocks.0.ffn.net.0.proj.bias",
    "blocks.0.ffn.2.diff_b": "blocks.0.ffn.net.2.bias",
    "head.head.diff": "proj_out.weight",
    "head.head.diff_b": "proj_out.bias",
    "head.modulation.diff": "scale_shift_table",
    "patch_embedding.diff_b": "patch_embedding.bias",
    "time_projection.1.diff_b": "condition_embedder.time_proj.bias",
    "text_embedding.0.diff_b": "condition_embedder.text_embedder.linear_1.bias",
    "time_embedding.2.diff_b": "condition_embedder.time_embedder.linear_2.bias",
}
WAN_DELTAS_CLIP = {
    "blocks.0.cross_attn.norm_k_img.diff": "blocks.0.attn2.norm_added_k.weight",
    "blocks.0.cross_attn.k_img.diff_b": "blocks.0.attn2.add_k_proj.bias",
    "img_emb.proj.0.diff": "condition_embedder.image_embedder.norm1.weight",
    "img_emb.proj.4.diff_b": "condition_embedder.image_embedder.norm2.bias",
}


def lightx2v_lora(model: torch.nn.Module, seed: int, rank: int = 2, alpha: float = 3.0):
    """A LightX2V-style file for ``model``: ``diffusion_model.`` keys, ``lora_down/up`` +
    ``.alpha`` pairs and full-weight deltas, all in bf16 (as published). Returns the
    state dict, the pairs ``{module: (A, B, alpha)}`` and the deltas ``{parameter: d}``."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    clip = "blocks.0.attn2.add_k_proj.weight" in params
    sd, pairs, deltas = {}, {}, {}
    for wan, ours in (WAN_PAIRS | (WAN_PAIRS_CLIP if clip else {})).items():
        out_f, in_f = params[f"blocks.0.{ours}.weight"].shape
        a = (0.1 * torch.randn(rank, in_f, generator=g)).bfloat16()
        b = (0.1 * torch.randn(out_f, rank, generator=g)).bfloat16()
        key = f"diffusion_model.blocks.0.{wan}"
        sd |= {f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b,
               f"{key}.alpha": torch.tensor(alpha)}  # fmt: skip
        pairs[f"blocks.0.{ours}"] = (a, b, alpha)
    for key, param in (WAN_DELTAS | (WAN_DELTAS_CLIP if clip else {})).items():
        d = (0.05 * torch.randn(params[param].shape, generator=g)).bfloat16()
        sd[f"diffusion_model.{key}"] = d
        deltas[param] = d
    return sd, pairs, deltas


def svi_lora(model: torch.nn.Module, seed: int, rank: int = 3):
    """An SVI-release-style file (``pipe.dit.`` + peft ``.default`` keys, no alpha)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    sd, pairs = {}, {}
    for wan, ours in WAN_PAIRS.items():
        out_f, in_f = params[f"blocks.0.{ours}.weight"].shape
        a, b = (
            0.1 * torch.randn(rank, in_f, generator=g),
            0.1 * torch.randn(out_f, rank, generator=g),
        )
        key = f"pipe.dit.blocks.0.{wan}"
        sd |= {f"{key}.lora_A.default.weight": a, f"{key}.lora_B.default.weight": b}
        pairs[f"blocks.0.{ours}"] = (a, b, float(rank))
    return sd, pairs, {}
