"""Trainable LoRAs: attach a fresh peft adapter, its parameters, its state dict."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import torch
from torch import nn

from svi.errors import SviError

logger = logging.getLogger(__name__)

__all__ = ["WAN_LORA_TARGETS", "add_training_lora", "lora_parameters", "lora_state_dict"]

# q, k, v, o of self- and cross-attention and both FFN linears of every block (SPEC 3.8).
WAN_LORA_TARGETS: tuple[str, ...] = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ffn.net.0.proj",
    "ffn.net.2",
)

_INIT = {"default": True, "gaussian": "gaussian"}


def _lora_layers(transformer: nn.Module, adapter_name: str) -> Iterator[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            yield name, module


def add_training_lora(
    transformer: nn.Module,
    rank: int,
    alpha: float,
    adapter_name: str = "svi",
    init: str = "default",
    *,
    targets: tuple[str, ...] = WAN_LORA_TARGETS,
) -> None:
    """Attach a fresh trainable peft LoRA; freeze everything else.

    ``init="default"`` is peft's (Kaiming A, zero B: the model is unchanged at step 0);
    ``"gaussian"`` draws A from a normal distribution instead (B still zero).
    """
    from peft import LoraConfig

    if rank < 1:
        raise SviError(f"LoRA rank must be >= 1, got {rank}")
    if init not in _INIT:
        raise SviError(f"unknown LoRA init {init!r}; use one of {sorted(_INIT)}")
    if adapter_name in (getattr(transformer, "peft_config", {}) or {}):
        raise SviError(f"adapter name {adapter_name!r} is already in use")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        init_lora_weights=_INIT[init],
    )
    transformer.add_adapter(config, adapter_name=adapter_name)  # type: ignore[operator]
    for name, param in transformer.named_parameters():
        param.requires_grad_(_is_lora_param(name, adapter_name))
    n = sum(1 for _ in _lora_layers(transformer, adapter_name))
    logger.info("added LoRA %r (rank %d, alpha %g) on %d layers", adapter_name, rank, alpha, n)


def _is_lora_param(name: str, adapter_name: str | None) -> bool:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("lora_A", "lora_B") and (adapter_name is None or parts[i + 1] == adapter_name):
            return True
    return False


def lora_parameters(
    transformer: nn.Module, adapter_name: str | None = "svi"
) -> Iterator[nn.Parameter]:
    """The LoRA parameters of ``adapter_name`` (all adapters if None), for the optimizer."""
    for name, param in transformer.named_parameters():
        if _is_lora_param(name, adapter_name):
            yield param


def lora_state_dict(transformer: nn.Module, adapter_name: str = "svi") -> dict[str, torch.Tensor]:
    """An attached adapter in diffusers form, plus ``.alpha`` scalars.

    Keys: ``transformer.<module>.lora_A.weight`` / ``.lora_B.weight`` (detached CPU
    copies) and ``transformer.<module>.alpha`` (effective alpha, so that alpha / rank is
    the layer's scale). :func:`save_lora` moves the alphas into the file header for
    the diffusers form and keeps them as keys for the wan form.
    """
    from peft.utils import get_peft_model_state_dict

    layers = dict(_lora_layers(transformer, adapter_name))
    if not layers:
        raise SviError(f"the model has no LoRA adapter named {adapter_name!r}")
    raw = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        out[f"transformer.{key}"] = value.detach().to("cpu").clone().contiguous()
    for name, layer in layers.items():
        r = layer.r[adapter_name]
        alpha = float(layer.lora_alpha[adapter_name])
        if layer.use_rslora.get(adapter_name, False):
            alpha *= math.sqrt(r)
        out[f"transformer.{name}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return out
