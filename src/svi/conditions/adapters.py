"""Conditional adapters: a LoRA plus the condition modules it was trained with, one file.

``svi train`` with a condition saves the LoRA pairs and the plain weights of the
condition modules together (released layout, no prefix: ``dwpose_embedding.*`` of the
Dance file, ``audio_proj.*`` / ``blocks.N.norm_x.*`` / ``blocks.N.audio_cross_attn.*`` of
the Talk file) and records the module shapes in the header (``condition``). Loading a
file looks at its plain weights first: a pose or audio file gets its modules attached
(:func:`attach_for_file`) before :func:`svi.lora.apply_lora` copies the weights in.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, fields
from typing import Any

import torch
from torch import nn

from svi.conditions.audio_modules import (
    MULTITALK_AUDIO,
    WORLD_AUDIO,
    AudioModulesConfig,
    attach_audio_modules,
    has_audio_modules,
)
from svi.conditions.pose import (
    POSE_MODULE,
    PoseEncoderConfig,
    attach_pose_encoder,
    has_pose_encoder,
    pose_encoder_config,
)
from svi.errors import SviError

log = logging.getLogger(__name__)

_AUDIO_PARTS = ("audio_proj", "norm_x", "audio_cross_attn")


def condition_of_paths(paths: list[str]) -> str | None:
    """``"pose"``, ``"audio"`` or None from a file's plain (extra) weight paths."""
    roots = {p.split(".")[0] if not p.startswith("blocks.") else p.split(".")[2] for p in paths}
    if POSE_MODULE in roots:
        return "pose"
    if roots & set(_AUDIO_PARTS):
        return "audio"
    return None


def model_condition(model: nn.Module) -> str | None:
    """The condition modules attached to ``model``: ``"audio"``, ``"pose"`` or None."""
    if has_audio_modules(model):
        return "audio"
    return "pose" if has_pose_encoder(model) else None


def attach_condition(
    model: nn.Module, kind: str, codec: Any, family: str, config: dict | None = None
) -> None:
    """Attach the modules of condition ``kind`` (shapes from ``config``, a file's
    ``condition`` header entry; else the model family's default)."""
    if kind == "audio":
        if config:
            names = {f.name for f in fields(AudioModulesConfig)}
            audio = AudioModulesConfig(**{k: v for k, v in config.items() if k in names})
        else:
            audio = WORLD_AUDIO if family == "world" else MULTITALK_AUDIO
        attach_audio_modules(model, audio)
    elif kind == "pose":
        pose = pose_encoder_config(model, codec)
        if config:
            names = {f.name for f in fields(PoseEncoderConfig)}
            pose = PoseEncoderConfig(**{k: v for k, v in config.items() if k in names})
        attach_pose_encoder(model, pose)
    else:
        raise SviError(f"unknown condition {kind!r}; use audio or pose")


def condition_config(model: nn.Module) -> dict | None:
    """The header entry ``condition`` describing ``model``'s attached modules."""
    if has_audio_modules(model):
        return {"kind": "audio", **asdict(model.audio_proj.config)}  # type: ignore[union-attr]
    if has_pose_encoder(model):
        return {"kind": "pose", **asdict(getattr(model, POSE_MODULE).config)}
    return None


def condition_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The condition modules' weights under their released names (detached CPU copies)."""
    out = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        ours = parts[0] in (POSE_MODULE, "audio_proj") or (
            parts[0] == "blocks" and len(parts) > 2 and parts[2] in _AUDIO_PARTS
        )
        if ours:
            out[name] = tensor.detach().to("cpu").clone().contiguous()
    return out


def condition_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The condition modules' parameters (all trained when a condition is trained)."""
    keys = set(condition_state_dict(model))
    return [(n, p) for n, p in model.named_parameters() if n in keys]


def attach_for_file(model: nn.Module, path: Any, codec: Any, family: str) -> str | None:
    """Attach the condition modules a LoRA file needs (none if it has no plain weights);
    returns the condition. A second conditional file of another condition is refused."""
    from svi.lora import read_lora, read_lora_metadata

    kind = condition_of_paths(list(read_lora(path).extras))
    if kind is None:
        return None
    have = model_condition(model)
    if have == kind:
        return kind
    if have is not None:
        raise SviError(f"{path} is an adapter for the {kind} condition but the model already "
                       f"has {have} modules from another file")  # fmt: skip
    meta = read_lora_metadata(path).get("condition")
    attach_condition(model, kind, codec, family, meta if isinstance(meta, dict) else None)
    log.info("attached %s condition modules for %s", kind, path)
    return kind
