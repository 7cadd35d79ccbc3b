"""LoRA files: a safetensors file or a folder of shards, read, fingerprinted, written."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from svi.errors import SviError
from svi.lora.keys import _extra_path, wan_module_name
from svi.lora.normalize import (
    AlphaLookup,
    LoraTensors,
    WeightDelta,
    _alpha_from_peft_config,
    _normalize,
    _refuse_deltas,
    _refuse_extras,
    _split_state_dict,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LoraContents",
    "lora_files",
    "lora_fingerprint",
    "read_lora",
    "read_lora_metadata",
    "save_lora",
]

_META_PEFT = "lora_adapter_metadata"  # diffusers' header key for the LoraConfig (JSON)
_META_FORM = "svi_lora_form"
_RESERVED_META = ("format", _META_PEFT, _META_FORM)


@dataclass(frozen=True)
class LoraContents:
    """A LoRA read by :func:`read_lora`: normalised pairs and plain extra weights."""

    source: str  # the path as given, or "<form state dict>"
    form: str
    entries: dict[str, LoraTensors]  # diffusers module path -> pair
    first_keys: dict[str, str]  # module -> its first original key (for messages)
    extras: dict[str, torch.Tensor]  # unwrapped path -> tensor, e.g. "dwpose_embedding.0.weight"
    extra_keys: dict[str, str]  # unwrapped path -> original key
    # full-weight deltas by diffusers parameter path, e.g. "blocks.0.norm2.weight"
    deltas: dict[str, WeightDelta] = field(default_factory=dict)


def lora_files(path: str | os.PathLike[str]) -> list[Path]:
    """The safetensors files of a LoRA: the file itself, or a folder's shards.

    A folder is read as one LoRA split into shards: every ``*.safetensors`` directly in
    it, sorted by name (hidden files, e.g. partial downloads, are not shards). A folder
    with none is an error, as is a missing path.
    """
    p = Path(path)
    if p.is_dir():
        found = [q for q in p.glob("*.safetensors") if q.is_file() and not q.name.startswith(".")]
        if not found:
            other = sorted(q.name for q in p.iterdir() if q.suffix in {".bin", ".pt", ".ckpt"})
            hint = f" (found {other[0]}: svi reads safetensors only)" if other else ""
            raise SviError(f"LoRA folder {p} holds no .safetensors file{hint}")
        return sorted(found, key=lambda q: q.name)
    if not p.is_file():
        raise SviError(f"LoRA file not found: {p}")
    return [p]


def _read_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises several types for bad files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SviError(f"LoRA {path} is not a readable safetensors file: {msg}") from exc


def _merge_headers(headers: list[tuple[Path, dict[str, str]]]) -> dict[str, str]:
    """One header from the shards' headers; a key set in several must agree."""
    merged: dict[str, str] = {}
    seen_in: dict[str, Path] = {}
    for path, header in headers:
        for key, value in header.items():
            if key in merged and merged[key] != value:
                raise SviError(
                    f"LoRA shards disagree on header metadata {key!r}: "
                    f"{seen_in[key].name} and {path.name} in {path.parent}"
                )
            merged[key] = value
            seen_in.setdefault(key, path)
    return merged


def _load_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import load_file

    header = _read_header(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SviError(f"LoRA {path} is not a readable safetensors file: {msg}") from exc
    return tensors, header


def _load_shards(
    files: list[Path],
) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """All shards as one state dict, their merged header, and key -> shard name (if many)."""
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    headers: list[tuple[Path, dict[str, str]]] = []
    for path in files:
        part, header = _load_file(path)
        headers.append((path, header))
        for key, tensor in part.items():
            if key in origin:
                raise SviError(
                    f"LoRA key {key!r} is in two shards of {path.parent}: "
                    f"{origin[key]} and {path.name}"
                )
            tensors[key] = tensor
            origin[key] = path.name
    return tensors, _merge_headers(headers), origin if len(files) > 1 else {}


def _alpha_from_header(header: Mapping[str, str], source: str) -> AlphaLookup | None:
    if _META_PEFT not in header:
        return None
    try:
        config = json.loads(header[_META_PEFT])
    except json.JSONDecodeError as exc:
        raise SviError(f"LoRA {source}: header {_META_PEFT!r} is not valid JSON") from exc
    try:
        return _alpha_from_peft_config(config) if isinstance(config, dict) else None
    except (TypeError, ValueError) as exc:
        raise SviError(f"LoRA {source}: malformed {_META_PEFT!r} header ({exc})") from exc


def read_lora(lora: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> LoraContents:
    """Read a LoRA file, folder of shards or state dict: normalised pairs and extras.

    Alphas come from ``.alpha`` keys, else from diffusers' LoraConfig header, else equal
    the rank. Plain weights of modules outside the base DiT (``dwpose_embedding.*``)
    come back in ``extras``, unwrapped like the LoRA keys; plain weights of the base
    DiT's own modules are refused (full-weight fine-tunes are not LoRAs). Deltas to add
    to base parameters (``.diff``, ``.diff_b``, ``.diff_m``, ``lora_B.bias``; the key
    forms: :mod:`svi.lora.keys`) come back in ``deltas``.
    """
    if isinstance(lora, Mapping):
        source, tensors = "<state dict>", lora
        header: dict[str, str] = {}
        origin: dict[str, str] = {}
    else:
        files = lora_files(lora)
        source = str(lora)
        tensors, header, origin = _load_shards(files)
        if not tensors:
            raise SviError(f"LoRA {source} holds no tensors")
    lora_sd, extras, extra_keys = _split_state_dict(tensors, origin)
    if extras and not lora_sd:
        entries: dict[str, LoraTensors] = {}
        form, first_keys, deltas = "diffusers", {}, {}
    else:
        alpha_of = _alpha_from_header(header, source)
        entries, form, first_keys, deltas = _normalize(lora_sd, alpha_of, origin)
    if source == "<state dict>":
        source = f"<{form} state dict>"
    return LoraContents(source, form, entries, first_keys, extras, extra_keys, deltas)


def read_lora_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """The safetensors header metadata of a LoRA file (or its shards), JSON values decoded.

    Values that are not JSON (e.g. ``format: pt`` or foreign plain strings) come back
    as strings. Shards may each carry metadata; a key set in several must agree.
    """
    header = _merge_headers([(f, _read_header(f)) for f in lora_files(path)])
    out: dict[str, object] = {}
    for key, value in header.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def lora_fingerprint(path: str | os.PathLike[str], length: int = 16) -> str:
    """Short sha256 hex digest of a LoRA file, for manifests.

    A folder of shards: the digest over every shard's name and sha256 (one shard: its
    own digest, as for a file), so changing any shard changes it.
    """
    from svi.fingerprint import sha256_file

    files = lora_files(path)
    if len(files) == 1:
        return sha256_file(files[0])[:length]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()[:length]


def _snap(alpha: float) -> float:
    """Round alpha to an integer when it is one up to float noise (keeps scales exact)."""
    nearest = round(alpha)
    return float(nearest) if abs(alpha - nearest) <= 1e-6 * max(1.0, abs(alpha)) else alpha


def _peft_config_dict(entries: Mapping[str, LoraTensors]) -> dict[str, object]:
    """LoraConfig kwargs reproducing per-module rank and alpha (patterns only where needed)."""
    ranks = {m: e.rank for m, e in entries.items()}
    alphas = {m: _snap(e.scale * e.rank) for m, e in entries.items()}
    r0 = Counter(ranks.values()).most_common(1)[0][0]
    a0 = Counter(alphas.values()).most_common(1)[0][0]
    return {
        "r": r0,
        "lora_alpha": a0,
        "target_modules": sorted(entries),
        "rank_pattern": {"^" + re.escape(m): r for m, r in ranks.items() if r != r0},
        "alpha_pattern": {"^" + re.escape(m): a for m, a in alphas.items() if a != a0},
    }


def save_lora(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    *,
    form: Literal["diffusers", "wan"] = "diffusers",
    metadata: Mapping[str, object] | None = None,
    extras: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a LoRA (any supported input form) as safetensors in ``form``.

    ``diffusers``: ``transformer.<module>.lora_A/B.weight`` with the LoraConfig (rank,
    alpha) in diffusers' ``lora_adapter_metadata`` header, so diffusers' own loader
    gets the scale right. ``wan``: ``diffusion_model.<wan module>.lora_A/B.weight`` plus
    ``.alpha`` scalars (ComfyUI / diffusers' Wan converter honour them). ``metadata``
    values are stored JSON-encoded in the header (read back by :func:`read_lora_metadata`).
    ``extras``: plain weights of extra modules (a conditional adapter's pose encoder or
    audio modules), stored under their own names in either form, as released files do.
    """
    from safetensors.torch import save_file

    _refuse_extras(state_dict, "save_lora writes LoRA pairs only")
    _refuse_deltas(state_dict, "save_lora writes LoRA pairs only")
    entries = _normalize(state_dict)[0]
    header: dict[str, str] = {"format": "pt", _META_FORM: form}
    tensors: dict[str, torch.Tensor] = {}
    if form == "diffusers":
        for module, e in entries.items():
            tensors[f"transformer.{module}.lora_A.weight"] = e.down
            tensors[f"transformer.{module}.lora_B.weight"] = e.up
        config = {f"transformer.{k}": v for k, v in _peft_config_dict(entries).items()}
        header[_META_PEFT] = json.dumps(config, sort_keys=True)
    elif form == "wan":
        for module, e in entries.items():
            name = f"diffusion_model.{wan_module_name(module)}"
            tensors[f"{name}.lora_A.weight"] = e.down
            tensors[f"{name}.lora_B.weight"] = e.up
            tensors[f"{name}.alpha"] = torch.tensor(_snap(e.scale * e.rank), dtype=torch.float32)
    else:
        raise SviError(f"unknown LoRA form {form!r}; use 'diffusers' or 'wan'")
    for key, value in (extras or {}).items():
        if _extra_path(key) != key:
            raise SviError(f"{key!r} is not the name of an extra module's weight")
        tensors[key] = value
    for key, value in (metadata or {}).items():
        if key in _RESERVED_META:
            raise SviError(f"LoRA metadata key {key!r} is reserved")
        try:
            header[str(key)] = json.dumps(value, sort_keys=True)
        except TypeError as exc:
            raise SviError(f"LoRA metadata {key!r} is not JSON-serialisable") from exc
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out), metadata=header)
    logger.info("saved %d-module LoRA in %s form to %s", len(entries), form, out)
    return out
