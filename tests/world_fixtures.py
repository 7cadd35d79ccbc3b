"""A tiny random world model of the real classes, saved as a loadable model folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from svi.models.bundle import build_world_transformer, save_world_model
from svi.models.presets import get_preset

TINY_DIT = {
    **get_preset("world-tiny").transformer,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "ffn_dim": 32,
    "num_layers": 1,
    "freq_dim": 16,
}


def tiny_world_preset(**overrides):
    base = get_preset("world-tiny")
    return replace(base, transformer=TINY_DIT, steps=2, **overrides)


def random_lora(transformer, suffix: str = "attn1.to_q", rank: int = 2) -> dict:
    """A random diffusers-form LoRA on every module whose name ends with ``suffix``."""
    sd = {}
    for name, module in transformer.named_modules():
        if name.endswith(suffix):
            out_f, in_f = module.weight.shape
            sd[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, in_f)
            sd[f"transformer.{name}.lora_B.weight"] = torch.randn(out_f, rank)
    return sd


def build_tiny_world_model(path: Path, seed: int = 0, **overrides) -> Path:
    """A randomly initialised (seeded) world model folder for pipeline tests."""
    preset = tiny_world_preset(**overrides)
    model = build_world_transformer(preset, seed=seed)
    return save_world_model(path, model, preset, {"note": "tiny random test model"})
