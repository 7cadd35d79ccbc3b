"""LoRA state dicts of any key form normalised to ``{module: LoraTensors}`` plus the
full-weight deltas some files carry (``{parameter: WeightDelta}``, :mod:`svi.lora.keys`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch

from svi.errors import SviError
from svi.lora.keys import _TENSOR_RE, _count_roots, _extra_path, parse_lora_key

__all__ = ["LoraTensors", "WeightDelta", "normalize_lora_state_dict"]


class LoraTensors(NamedTuple):
    """A normalised LoRA of one module: ``delta W = scale * up @ down``."""

    down: torch.Tensor  # A, (rank, in) or (rank, in, *kernel) for a conv
    up: torch.Tensor  # B, (out, rank) or (out, rank, 1, ...)
    scale: float  # alpha / rank

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


class WeightDelta(NamedTuple):
    """A delta added to one parameter of the model: ``p += strength * scale * delta``.

    ``scale`` is 1 for ``.diff`` / ``.diff_b`` / ``.diff_m`` keys and alpha / rank for
    peft's ``lora_B.bias`` (peft scales the B layer's bias with the pair).
    """

    key: str  # the original key, for messages
    delta: torch.Tensor  # the parameter's shape
    scale: float = 1.0


AlphaLookup = Callable[[str, int], "float | None"]


def _check_pair(key: str, down: torch.Tensor, up: torch.Tensor) -> None:
    if down.ndim < 2 or up.ndim != down.ndim or any(d != 1 for d in up.shape[2:]):
        raise SviError(
            f"LoRA key {key!r}: malformed matrices, A {tuple(down.shape)} and B {tuple(up.shape)}"
        )
    if down.shape[0] != up.shape[1]:
        raise SviError(
            f"LoRA key {key!r}: rank mismatch, A {tuple(down.shape)} has rank {down.shape[0]} "
            f"but B {tuple(up.shape)} has rank {up.shape[1]}"
        )


def _at(key: str, origin: Mapping[str, str] | None) -> str:
    """A key for a message, with the shard it came from when the LoRA is a folder."""
    return f"{key!r} (in {origin[key]})" if origin and key in origin else repr(key)


def _split_state_dict(
    state_dict: Mapping[str, torch.Tensor], origin: Mapping[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    """Split into (LoRA keys, extra weights by unwrapped path, path -> original key)."""
    lora: dict[str, torch.Tensor] = {}
    extras: dict[str, torch.Tensor] = {}
    extra_keys: dict[str, str] = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise SviError(f"LoRA key {_at(key, origin)} does not hold a tensor")
        path = _extra_path(key)
        if path is None:
            lora[key] = tensor
            continue
        if path in extras:
            raise SviError(
                f"LoRA key {_at(key, origin)} duplicates {_at(extra_keys[path], origin)} "
                f"(both are {path})"
            )
        extras[path], extra_keys[path] = tensor, key
    return lora, extras, extra_keys


def _refuse_extras(state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    extras = _split_state_dict(state_dict)[1]
    if extras:
        raise SviError(
            f"LoRA state dict holds plain weights of non-LoRA modules ({_count_roots(extras)}); "
            + what
        )


def _normalize(
    state_dict: Mapping[str, torch.Tensor],
    alpha_of: AlphaLookup | None = None,
    origin: Mapping[str, str] | None = None,
) -> tuple[dict[str, LoraTensors], str, dict[str, str], dict[str, WeightDelta]]:
    """Normalise; also return the detected form, the first original key per module and
    the full-weight deltas by diffusers parameter path.

    ``origin`` (key -> shard file name) only adds file names to the messages.
    """
    if not state_dict:
        raise SviError("LoRA state dict is empty")
    slots: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    deltas: dict[str, WeightDelta] = {}
    form: str | None = None
    form_key = ""
    adapter_seen: tuple[str, str] | None = None
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise SviError(f"LoRA key {_at(key, origin)} does not hold a tensor")
        parsed = parse_lora_key(key)
        if parsed.form is not None:
            if form is None:
                form, form_key = parsed.form, key
            elif parsed.form != form:
                raise SviError(
                    f"LoRA mixes key forms: {_at(key, origin)} is {parsed.form} form "
                    f"but {_at(form_key, origin)} is {form} form"
                )
        if parsed.adapter is not None:
            if adapter_seen is None:
                adapter_seen = (parsed.adapter, key)
            elif parsed.adapter != adapter_seen[0]:
                raise SviError(
                    f"LoRA holds several adapters: {_at(key, origin)} ({parsed.adapter}) and "
                    f"{_at(adapter_seen[1], origin)} ({adapter_seen[0]})"
                )
        if parsed.kind == "delta":
            assert parsed.param is not None
            if parsed.param in deltas:
                raise SviError(
                    f"LoRA key {_at(key, origin)} duplicates "
                    f"{_at(deltas[parsed.param].key, origin)} (both are deltas of {parsed.param})"
                )
            deltas[parsed.param] = WeightDelta(key, tensor)
            continue
        slot = slots.setdefault(parsed.module, {})
        if parsed.kind in slot:
            raise SviError(
                f"LoRA key {_at(key, origin)} duplicates {_at(slot[parsed.kind][0], origin)} "
                f"(both are {parsed.kind} of {parsed.module})"
            )
        slot[parsed.kind] = (key, tensor)

    entries: dict[str, LoraTensors] = {}
    first_keys: dict[str, str] = {}
    for module, slot in slots.items():
        any_key = next(iter(slot.values()))[0]
        for needed in ("A", "B"):
            if needed not in slot:
                raise SviError(f"LoRA key {any_key!r}: module {module} has no {needed} matrix")
        key_a, down = slot["A"]
        _, up = slot["B"]
        _check_pair(key_a, down, up)
        rank = int(down.shape[0])
        alpha: float | None = None
        if "alpha" in slot:
            alpha_key, alpha_t = slot["alpha"]
            if alpha_t.numel() != 1:
                raise SviError(f"LoRA key {alpha_key!r}: alpha must be a scalar")
            alpha = float(alpha_t.item())
        elif alpha_of is not None:
            alpha = alpha_of(module, rank)
        entries[module] = LoraTensors(down, up, (rank if alpha is None else alpha) / rank)
        first_keys[module] = key_a
        if "B_bias" in slot:  # peft's lora_B.bias: scaled with the pair
            bias_key, bias = slot["B_bias"]
            param = f"{module}.bias"
            if param in deltas:
                raise SviError(
                    f"LoRA key {_at(bias_key, origin)} duplicates "
                    f"{_at(deltas[param].key, origin)} (both are deltas of {param})"
                )
            deltas[param] = WeightDelta(bias_key, bias, entries[module].scale)
    return entries, form or "diffusers", first_keys, deltas


def normalize_lora_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, alphas: Mapping[str, float] | None = None
) -> dict[str, LoraTensors]:
    """Normalise a LoRA state dict of any supported form.

    Returns ``{diffusers module path: LoraTensors(down, up, scale)}`` where
    ``scale = alpha / rank``; alpha comes from ``.alpha`` keys, else from ``alphas``
    (per module path, e.g. read from a file header), else equals the rank.
    Raises :class:`SviError` on unknown or mixed key forms, naming the first bad key,
    and on plain weights of extra modules and full-weight deltas (:func:`read_lora`
    returns those apart).
    """
    _refuse_extras(state_dict, "read_lora() returns them apart from the LoRA pairs")
    _refuse_deltas(state_dict, "read_lora() returns them apart from the LoRA pairs")
    lookup: AlphaLookup | None = None
    if alphas is not None:
        table = dict(alphas)

        def lookup(module: str, rank: int) -> float | None:
            return table.get(module)

    return _normalize(state_dict, lookup)[0]


_UPS = ("lora_B", "lora_up")


def _is_delta_key(key: str) -> bool:
    """A full-weight delta (``.diff``, ``.diff_b``, ``.diff_m``) or peft's ``lora_B.bias``."""
    m = _TENSOR_RE.match(key)
    return m is not None and bool(m["delta"] or (m["leaf"] == "bias" and m["mat"] in _UPS))


def _refuse_deltas(state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    found = [k for k in state_dict if _is_delta_key(k)]
    if found:
        raise SviError(
            f"LoRA state dict holds {len(found)} full-weight delta{'s' * (len(found) != 1)} "
            f"(first: {found[0]!r}); " + what
        )


def _alpha_from_peft_config(config: Mapping[str, object]) -> AlphaLookup | None:
    """Alpha per module from a LoraConfig dict (diffusers' ``lora_adapter_metadata``)."""
    if any(k.startswith("transformer.") for k in config):
        config = {
            k[len("transformer.") :]: v for k, v in config.items() if k.startswith("transformer.")
        }
    if "lora_alpha" not in config:
        return None
    default = float(config["lora_alpha"])  # type: ignore[arg-type]
    patterns = dict(config.get("alpha_pattern") or {})  # type: ignore[call-overload]
    rslora = bool(config.get("use_rslora", False))

    def lookup(module: str, rank: int) -> float:
        alpha = default
        for pattern, value in patterns.items():
            try:
                hit = re.match(rf"(.*\.)?({pattern})$", module)
            except re.error as exc:
                raise SviError(f"LoRA header alpha_pattern {pattern!r} is not a regex") from exc
            if hit:
                alpha = float(value)
                break
        # rsLoRA scales by alpha / sqrt(r); express it as an effective alpha over r.
        return alpha * math.sqrt(rank) if rslora else alpha

    return lookup
