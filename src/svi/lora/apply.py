"""LoRAs applied to a model: merged into its weights or attached as peft adapters."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from svi.errors import SviError
from svi.lora.files import LoraContents, _peft_config_dict, read_lora
from svi.lora.keys import _count_roots, _extra_root
from svi.lora.normalize import LoraTensors, WeightDelta
from svi.lora.training import _lora_layers

logger = logging.getLogger(__name__)

__all__ = ["LoraReport", "apply_lora", "remove_lora", "set_lora_scale"]


@dataclass(frozen=True)
class LoraReport:
    """What :func:`apply_lora` did."""

    source: str
    form: str
    modules: tuple[str, ...]
    ranks: tuple[int, ...]  # distinct ranks
    lora_scales: tuple[float, ...]  # distinct alpha / rank
    strength: float  # the user's scale on top of alpha / rank
    merged: bool
    adapter_name: str | None
    # Plain weights loaded into extra modules: "dwpose_embedding (12 tensors)", or "".
    extras: str = ""
    deltas: int = 0  # full-weight deltas added (.diff / .diff_b / .diff_m / lora_B.bias)

    @property
    def n_modules(self) -> int:
        return len(self.modules)

    def summary(self) -> str:
        how = "merged" if self.merged else f"attached as adapter {self.adapter_name!r}"
        text = (
            f"LoRA {self.source} ({self.form} form): {self.n_modules} modules, "
            f"rank {'/'.join(map(str, self.ranks))}, alpha/rank "
            f"{'/'.join(f'{s:g}' for s in self.lora_scales)}, strength {self.strength:g}, {how}"
        )
        if self.deltas:
            text += f"; {self.deltas} full-weight delta{'s' * (self.deltas != 1)} added"
        return f"{text}; loaded weights of {self.extras}" if self.extras else text


def _base_layer(module: nn.Module) -> nn.Module:
    get_base = getattr(module, "get_base_layer", None)  # peft-wrapped layers
    return get_base() if callable(get_base) else module


def _resolve_targets(
    transformer: nn.Module,
    entries: Mapping[str, LoraTensors],
    first_keys: Mapping[str, str],
    source: str,
) -> dict[str, nn.Module]:
    """Find every target layer and check shapes, before anything is modified."""
    named = dict(transformer.named_modules())
    missing = [m for m in entries if m not in named]
    if len(missing) == len(entries):
        first = next(iter(first_keys.values()))
        raise SviError(f"LoRA {source} matched no module of the model; first key: {first!r}")
    if missing:
        m = missing[0]
        raise SviError(
            f"LoRA {source}: key {first_keys[m]!r} targets module {m!r}, "
            f"which this {type(transformer).__name__} does not have"
        )
    targets: dict[str, nn.Module] = {}
    for module, e in entries.items():
        layer = _base_layer(named[module])
        weight = getattr(layer, "weight", None)
        if not isinstance(layer, nn.Linear | nn.Conv3d | nn.Conv2d) or weight is None:
            raise SviError(
                f"LoRA {source}: key {first_keys[module]!r} targets {module!r}, a "
                f"{type(layer).__name__}, not a Linear or Conv layer"
            )
        fits = e.down.ndim == weight.ndim and e.down.shape[1:] == weight.shape[1:]
        if not fits or e.up.shape[0] != weight.shape[0]:
            raise SviError(
                f"LoRA {source}: key {first_keys[module]!r} does not fit {module!r}: "
                f"A {tuple(e.down.shape)}, B {tuple(e.up.shape)} vs weight {tuple(weight.shape)}"
            )
        targets[module] = layer
    return targets


@torch.no_grad()
def _merge(
    targets: Mapping[str, nn.Module], entries: Mapping[str, LoraTensors], strength: float
) -> None:
    for module, e in entries.items():
        weight = targets[module].weight
        down = e.down.to(weight.device, torch.float32).flatten(1)
        up = e.up.to(weight.device, torch.float32).flatten(1)
        delta = (up @ down).reshape(weight.shape)
        weight.copy_((weight.float() + (strength * e.scale) * delta).to(weight.dtype))


def _resolve_deltas(
    transformer: nn.Module, deltas: Mapping[str, WeightDelta], source: str
) -> dict[str, torch.Tensor]:
    """The model parameter of every full-weight delta, shapes checked, before any change."""
    if not deltas:
        return {}
    have = _model_tensors(transformer)
    targets: dict[str, torch.Tensor] = {}
    for param, d in deltas.items():
        if param not in have:
            raise SviError(
                f"LoRA {source}: key {d.key!r} adds to {param!r}, which this "
                f"{type(transformer).__name__} does not have"
            )
        want, got = tuple(have[param].shape), tuple(d.delta.shape)
        if want != got:
            raise SviError(
                f"LoRA {source}: key {d.key!r} has shape {got} but {param} has shape {want}"
            )
        targets[param] = have[param]
    return targets


@torch.no_grad()
def _add_deltas(
    targets: Mapping[str, torch.Tensor], deltas: Mapping[str, WeightDelta], strength: float
) -> None:
    """``p += strength * scale * delta`` in fp32, cast back (as :func:`_merge`)."""
    for param, d in deltas.items():
        p = targets[param]
        delta = d.delta.to(p.device, torch.float32)
        p.copy_((p.float() + (strength * d.scale) * delta).to(p.dtype))


def _attach(
    transformer: nn.Module,
    targets: Mapping[str, nn.Module],
    entries: Mapping[str, LoraTensors],
    adapter_name: str,
) -> None:
    if not hasattr(transformer, "load_lora_adapter"):
        raise TypeError("merge=False needs a diffusers model with PeftAdapterMixin")
    peft_sd: dict[str, torch.Tensor] = {}
    for module, e in entries.items():
        weight = targets[module].weight
        peft_sd[f"{module}.lora_A.weight"] = e.down.to(weight.device, weight.dtype)
        peft_sd[f"{module}.lora_B.weight"] = e.up.to(weight.device, weight.dtype)
    with warnings.catch_warnings():  # a second adapter is what we ask for
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.load_lora_adapter(  # type: ignore[operator]
            peft_sd, prefix=None, adapter_name=adapter_name, metadata=_peft_config_dict(entries)
        )
    for module in entries:
        layer = transformer.get_submodule(module)
        if adapter_name not in getattr(layer, "lora_A", {}):
            raise SviError(f"LoRA adapter {adapter_name!r} was not attached to {module!r}")


def _free_adapter_name(transformer: nn.Module) -> str:
    used = set(getattr(transformer, "peft_config", {}) or {})
    i = 0
    while f"lora_{i}" in used:
        i += 1
    return f"lora_{i}"


# Attribute of a model: {adapter name: {extra path: the tensor it replaced}}.
_EXTRA_BACKUP = "_svi_lora_extra_backup"

# What a missing extra module tells about the file (SVI_SPEC section 5).
_EXTRA_HINTS = {
    "dwpose_embedding": "a Dance LoRA needs the pose encoder (dwpose_embedding)",
    "audio": "a Talk LoRA needs the audio projection and per-block audio attention",
}


def _model_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's parameters and persistent buffers by name, peft wrappers unwrapped."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        parts = name.split(".")
        if not any(p.startswith("lora_") for p in parts):
            out[".".join(p for p in parts if p != "base_layer")] = tensor
    return out


def _resolve_extras(transformer: nn.Module, lora: LoraContents) -> dict[str, torch.Tensor]:
    """Map every extra weight to the model tensor it replaces; check all first.

    Each extra module must exist in the model and the file must give all of its tensors
    with exactly their shapes: a half-loaded pose encoder would run silently wrong.
    """
    if not lora.extras:
        return {}
    named = dict(transformer.named_modules())
    groups: dict[str, list[str]] = {}
    for path in lora.extras:
        groups.setdefault(_extra_root(path), []).append(path)
    absent = [p for root, paths in groups.items() if root not in named for p in paths]
    if absent:
        hints = [h for name, h in _EXTRA_HINTS.items() if any(name in p for p in absent)]
        hint = "load it into a model built with them"
        if hints:
            hint = "; ".join(hints) + f", which this {type(transformer).__name__} lacks"
        raise SviError(
            f"LoRA {lora.source} holds weights of modules this model does not have: "
            f"{_count_roots(absent)}; {hint}"
        )
    targets: dict[str, torch.Tensor] = {}
    for root, paths in groups.items():
        have = _model_tensors(_base_layer(named[root]))
        given = {p[len(root) + 1 :]: p for p in paths}
        surplus, lacking = sorted(set(given) - set(have)), sorted(set(have) - set(given))
        if surplus or lacking:
            odd = []
            if surplus:
                odd.append(f"the file has {', '.join(surplus[:3])} that the model lacks")
            if lacking:
                odd.append(f"the model has {', '.join(lacking[:3])} that the file lacks")
            raise SviError(
                f"LoRA {lora.source}: the weights of {root} do not match this model's {root}: "
                + "; ".join(odd)
            )
        for name, path in given.items():
            want, got = tuple(have[name].shape), tuple(lora.extras[path].shape)
            if want != got:
                raise SviError(
                    f"LoRA {lora.source}: key {lora.extra_keys[path]!r} has shape {got} "
                    f"but the model's {path} has shape {want}"
                )
            targets[path] = have[name]
    return targets


def _check_extras_free(transformer: nn.Module, targets: Mapping[str, torch.Tensor]) -> None:
    """Refuse to overwrite extra weights that an attached adapter will put back."""
    for adapter, saved in (getattr(transformer, _EXTRA_BACKUP, None) or {}).items():
        taken = sorted(set(saved) & set(targets))
        if taken:
            raise SviError(
                f"{taken[0]} holds weights of the attached LoRA adapter {adapter!r}; "
                "remove that adapter first"
            )


@torch.no_grad()
def _load_extras(
    transformer: nn.Module,
    targets: Mapping[str, torch.Tensor],
    extras: Mapping[str, torch.Tensor],
    adapter_name: str | None,
) -> None:
    """Copy the extra weights in; for an adapter, keep what they replace for removal."""
    if adapter_name is not None:
        backups = getattr(transformer, _EXTRA_BACKUP, None)
        if backups is None:
            backups = {}
            setattr(transformer, _EXTRA_BACKUP, backups)
        backups[adapter_name] = {p: t.detach().clone() for p, t in targets.items()}
    for path, tensor in targets.items():
        tensor.copy_(extras[path].to(tensor.device, tensor.dtype))


MAX_STRENGTH = 100.0  # |LoRA strength| beyond this is a typo, not a setting


def apply_lora(
    transformer: nn.Module,
    lora: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    scale: float = 1.0,
    *,
    merge: bool = True,
    adapter_name: str | None = None,
) -> LoraReport:
    """Apply a LoRA file (safetensors), folder of shards or state dict of any known form.

    ``merge=True`` adds ``scale * alpha/rank * B @ A`` to each weight in place (fp32
    arithmetic, cast back), then ``scale * delta`` to each parameter a full-weight delta
    names (``.diff`` / ``.diff_b`` / ``.diff_m``; peft's ``lora_B.bias`` adds
    ``scale * alpha/rank * bias``). Several LoRAs stack: each call adds its own deltas
    at its own ``scale``. ``merge=False`` attaches a peft adapter (removable with
    :func:`remove_lora`, rescalable with :func:`set_lora_scale`); a file with
    full-weight deltas can only be merged. Every LoRA module and delta target must exist
    in the model with matching shapes, else :class:`SviError`; nothing is modified when
    a check fails.

    Plain weights of extra modules (``dwpose_embedding.*``) are copied into the model's
    module of that name as they are: ``scale`` does not apply to them. The model must
    have every such module with exactly the file's tensors and shapes. Merged, they stay
    like the merged deltas; with an adapter, :func:`remove_lora` puts the old ones back.
    """
    if not math.isfinite(float(scale)) or abs(float(scale)) > MAX_STRENGTH:
        raise SviError(f"LoRA strength must be finite and within +-{MAX_STRENGTH:g}, got {scale}")
    contents = read_lora(lora)
    source, entries = contents.source, contents.entries
    for module, e in entries.items():
        if not (
            math.isfinite(e.scale) and torch.isfinite(e.down).all() and torch.isfinite(e.up).all()
        ):
            raise SviError(f"{source}: LoRA weights of {module} are not finite (NaN or inf)")
    for path, tensor in contents.extras.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SviError(f"{source}: weights of {path} are not finite (NaN or inf)")
    for d in contents.deltas.values():
        if not torch.isfinite(d.delta).all():
            raise SviError(f"{source}: the delta {d.key!r} is not finite (NaN or inf)")
    targets = _resolve_targets(transformer, entries, contents.first_keys, source) if entries else {}
    delta_targets = _resolve_deltas(transformer, contents.deltas, source)
    extra_targets = _resolve_extras(transformer, contents)
    _check_extras_free(transformer, extra_targets)
    if merge:
        if adapter_name is not None:
            raise SviError("adapter_name is only meaningful with merge=False")
        _merge(targets, entries, float(scale))
        _add_deltas(delta_targets, contents.deltas, float(scale))
    else:
        if contents.deltas:
            raise SviError(f"LoRA {source} holds full-weight deltas (first: "
                           f"{next(iter(contents.deltas.values())).key!r}); apply it "
                           "merged")  # fmt: skip
        if not entries:
            raise SviError(f"LoRA {source} holds no LoRA pairs to attach; apply it merged")
        if adapter_name is None:
            adapter_name = _free_adapter_name(transformer)
        elif adapter_name in (getattr(transformer, "peft_config", {}) or {}):
            raise SviError(f"adapter name {adapter_name!r} is already in use")
        _attach(transformer, targets, entries, adapter_name)
        set_lora_scale(transformer, adapter_name, float(scale))
    _load_extras(transformer, extra_targets, contents.extras, None if merge else adapter_name)
    report = LoraReport(
        source=source,
        form=contents.form,
        modules=tuple(sorted(entries)),
        ranks=tuple(sorted({e.rank for e in entries.values()})),
        lora_scales=tuple(sorted({e.scale for e in entries.values()})),
        strength=float(scale),
        merged=merge,
        adapter_name=adapter_name,
        extras=_count_roots(contents.extras),
        deltas=len(contents.deltas),
    )
    logger.info(report.summary())
    return report


def set_lora_scale(transformer: nn.Module, adapter_name: str, scale: float) -> None:
    """Set an attached adapter's strength (``scale * alpha/rank`` per layer)."""
    layers = list(_lora_layers(transformer, adapter_name))
    if not layers:
        raise SviError(f"the model has no LoRA adapter named {adapter_name!r}")
    for _, layer in layers:
        layer.set_scale(adapter_name, float(scale))  # type: ignore[operator]


def remove_lora(transformer: nn.Module, adapter_name: str) -> None:
    """Remove an attached adapter (diffusers' ``delete_adapters``).

    Extra-module weights that :func:`apply_lora` loaded with this adapter are put back
    to what they were. A merged LoRA cannot be removed, its extra weights neither.
    """
    if adapter_name not in (getattr(transformer, "peft_config", {}) or {}):
        raise SviError(f"the model has no LoRA adapter named {adapter_name!r}")
    transformer.delete_adapters(adapter_name)  # type: ignore[operator]
    saved = (getattr(transformer, _EXTRA_BACKUP, None) or {}).pop(adapter_name, {})
    if saved:
        current = _model_tensors(transformer)
        with torch.no_grad():
            for path, old in saved.items():
                current[path].copy_(old)
        logger.info("restored %s after removing adapter %r", _count_roots(saved), adapter_name)
