"""LoRAs on diffusers' ``WanTransformer3DModel``: load, merge, attach, train, save.

Three key forms exist in the wild (SVI_SPEC section 6) and one more is common:

- ``diffusers``: ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (prefix optional);
  ``peft`` is the same with an adapter segment (``lora_A.default.weight``);
- ``wan`` (original Wan / ComfyUI): ``diffusion_model.blocks.0.self_attn.q.lora_A.weight``
  or ``lora_down`` / ``lora_up``, with optional ``.alpha`` scalars (scale = alpha / rank);
- ``svi`` (SVI's released files, a peft-wrapped original-Wan DiT):
  ``blocks.0.self_attn.q.lora_A.default.weight``, bare or under ``pipe.dit.`` / ``model.``;
- ``musubi`` (kohya-style): ``lora_unet_blocks_0_self_attn_q.lora_down.weight``.

Training wrappers are stripped in one place (:func:`_strip_prefixes`): DeepSpeed /
Lightning's ``_forward_module.``, DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``
and FSDP's wrapper segments, in front of or inside the path.

Everything is normalised to ``{diffusers module path: LoraTensors(down, up, scale)}``.
diffusers' own Wan loader converts only ``diffusion_model.`` keys and loads nothing,
with a mere warning, for the SVI form; here every key must land on a module of the
model or the call fails with an :class:`SviError`.

A LoRA "file" is one safetensors file or a folder of ``*.safetensors`` shards, read as
one state dict (:func:`lora_files`). Besides LoRA pairs it may hold plain weights of
modules that the base DiT lacks, e.g. SVI-Dance's pose encoder ``dwpose_embedding.*``:
:func:`read_lora` returns them apart as ``extras`` and :func:`apply_lora` loads them
into the model's module of that name, or refuses the file when there is none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import nn

from svi.errors import SviError

logger = logging.getLogger(__name__)

__all__ = [
    "WAN_LORA_TARGETS",
    "LoraContents",
    "LoraKey",
    "LoraReport",
    "LoraTensors",
    "add_training_lora",
    "apply_lora",
    "lora_files",
    "lora_fingerprint",
    "lora_parameters",
    "lora_state_dict",
    "normalize_lora_state_dict",
    "parse_lora_key",
    "read_lora",
    "read_lora_metadata",
    "remove_lora",
    "save_lora",
    "set_lora_scale",
    "wan_module_name",
]

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

# Original-Wan module name -> diffusers module name, inside ``blocks.N``.
_BLOCK_MAP: dict[str, str] = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
# Original-Wan module name -> diffusers module name, outside the blocks.
_TOP_MAP: dict[str, str] = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
}
_BLOCK_UNMAP = {v: k for k, v in _BLOCK_MAP.items()}
_TOP_UNMAP = {v: k for k, v in _TOP_MAP.items()}
_WAN_TOP_ROOTS = ("head", "text_embedding", "time_embedding", "time_projection", "img_emb")

# Wrappers seen in front of the module path; stripped repeatedly, longest first.
# ``module.``: DDP / DeepSpeed engines; ``model.``: SVI's DiffSynth and Lightning modules.
_PREFIXES = (
    "base_model.model.",
    "diffusion_model.",
    "transformer.",
    "pipe.dit.",
    "module.",
    "model.",
    "dit.",
)
# Wrapper segments dropped wherever they stand (no real module has these names):
# Lightning/DeepSpeed, torch.compile, FSDP and activation checkpointing.
_WRAPPER_SEGMENTS = frozenset(
    {"_forward_module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"}
)
_MUSUBI_PREFIX = "lora_unet_"

_TENSOR_RE = re.compile(
    r"^(?P<path>.+?)\.(?:(?P<mat>lora_A|lora_B|lora_down|lora_up)"
    r"(?:\.(?P<adapter>[^.]+))?\.weight|(?P<alpha>alpha))$"
)
_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(.+)")
_MUSUBI_BLOCK_RE = re.compile(r"blocks_(\d+)_(self_attn|cross_attn|ffn)_(q|k|v|o|k_img|v_img|0|2)")

_META_PEFT = "lora_adapter_metadata"  # diffusers' header key for the LoraConfig (JSON)
_META_FORM = "svi_lora_form"
_RESERVED_META = ("format", _META_PEFT, _META_FORM)


class LoraKey(NamedTuple):
    """One parsed LoRA tensor key."""

    module: str  # diffusers module path, e.g. "blocks.0.attn1.to_q"
    kind: Literal["A", "B", "alpha"]
    # diffusers | peft | wan | svi | musubi; None for alpha keys (they carry no adapter
    # segment, so they cannot tell svi from wan) and for names common to all forms.
    form: str | None
    adapter: str | None  # peft adapter segment ("default"), if any


class LoraTensors(NamedTuple):
    """A normalised LoRA of one module: ``delta W = scale * up @ down``."""

    down: torch.Tensor  # A, (rank, in) or (rank, in, *kernel) for a conv
    up: torch.Tensor  # B, (out, rank) or (out, rank, 1, ...)
    scale: float  # alpha / rank

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


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
        return f"{text}; loaded weights of {self.extras}" if self.extras else text


@dataclass(frozen=True)
class LoraContents:
    """A LoRA read by :func:`read_lora`: normalised pairs and plain extra weights."""

    source: str  # the path as given, or "<form state dict>"
    form: str
    entries: dict[str, LoraTensors]  # diffusers module path -> pair
    first_keys: dict[str, str]  # module -> its first original key (for messages)
    extras: dict[str, torch.Tensor]  # unwrapped path -> tensor, e.g. "dwpose_embedding.0.weight"
    extra_keys: dict[str, str]  # unwrapped path -> original key


# --------------------------------------------------------------------------- keys


def _strip_prefixes(path: str) -> str:
    """Drop training wrappers from a module path: the one place keys are unwrapped."""
    path = ".".join(part for part in path.split(".") if part not in _WRAPPER_SEGMENTS)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if path.startswith(prefix):
                path = path[len(prefix) :]
                stripped = True
                break
    return path


def _musubi_to_wan(key: str, name: str) -> str:
    m = _MUSUBI_BLOCK_RE.fullmatch(name)
    if m:
        idx, part, leaf = m.groups()
        return f"blocks.{idx}.{part}.{leaf}"
    for wan in _TOP_MAP:
        if name == wan.replace(".", "_"):
            return wan
    raise SviError(f"LoRA key {key!r}: unknown kohya/musubi module name {name!r}")


def _wan_to_diffusers(key: str, path: str) -> tuple[str, str | None]:
    """Map a module path to (diffusers path, naming) with naming 'wan', 'diffusers' or None."""
    block = _BLOCK_RE.fullmatch(path)
    if block:
        idx, sub = block.groups()
        if sub in _BLOCK_MAP:
            return f"blocks.{idx}.{_BLOCK_MAP[sub]}", "wan"
        if re.match(r"(self_attn|cross_attn|modulation)(\.|$)|ffn\.\d", sub):
            raise SviError(
                f"LoRA key {key!r}: original-Wan module {sub!r} is not a LoRA target of "
                "WanTransformer3DModel (known: " + ", ".join(_BLOCK_MAP) + ")"
            )
        return path, "diffusers"
    if path == "patch_embedding":
        return path, None
    if path in _TOP_MAP:
        return _TOP_MAP[path], "wan"
    if path.split(".")[0] in _WAN_TOP_ROOTS:
        raise SviError(
            f"LoRA key {key!r}: original-Wan module {path!r} is not a LoRA target of "
            "WanTransformer3DModel (known: " + ", ".join(_TOP_MAP) + ")"
        )
    return path, "diffusers"


def parse_lora_key(key: str) -> LoraKey:
    """Parse one LoRA tensor key of any supported form into its diffusers module path."""
    m = _TENSOR_RE.match(key)
    if m is None:
        hint = ""
        if key.endswith((".diff", ".diff_b")) or ".lora_B.bias" in key:
            hint = " (full-weight diffs and LoRA biases are not supported)"
        elif "dora_scale" in key:
            hint = " (DoRA is not supported)"
        elif key.endswith((".weight", ".bias")) and ".lora_" not in key:
            hint = " (plain weights of the base model's modules are not supported)"
        raise SviError(f"unrecognised LoRA key {key!r}{hint}")
    is_down = m["mat"] in ("lora_A", "lora_down")
    kind: Literal["A", "B", "alpha"] = "alpha" if m["alpha"] else "A" if is_down else "B"
    adapter = m["adapter"]
    path = _strip_prefixes(m["path"])
    if path.startswith(_MUSUBI_PREFIX):
        wan = _musubi_to_wan(key, path[len(_MUSUBI_PREFIX) :])
        module, _ = _wan_to_diffusers(key, wan)
        return LoraKey(module, kind, None if kind == "alpha" else "musubi", adapter)
    module, naming = _wan_to_diffusers(key, path)
    form: str | None
    if kind == "alpha" or naming is None:
        form = None
    elif naming == "wan":
        form = "svi" if adapter else "wan"
    else:
        form = "peft" if adapter else "diffusers"
    return LoraKey(module, kind, form, adapter)


def wan_module_name(module: str) -> str:
    """The original-Wan name of a diffusers module path (inverse of the key map)."""
    block = _BLOCK_RE.fullmatch(module)
    if block and block[2] in _BLOCK_UNMAP:
        return f"blocks.{block[1]}.{_BLOCK_UNMAP[block[2]]}"
    if module in _TOP_UNMAP:
        return _TOP_UNMAP[module]
    raise SviError(f"module {module!r} has no original-Wan name; save this LoRA in diffusers form")


# --------------------------------------------------------------------- normalise

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


# Top-level modules of the base DiT (either naming) and the parts of one block: plain
# weights under these are full-weight fine-tunes of the base model, not extra modules.
_BASE_TOP_ROOTS = frozenset(
    {"patch_embedding", "condition_embedder", "rope", "norm_out", "proj_out"}
    | {"scale_shift_table", *_WAN_TOP_ROOTS}
)
_BASE_BLOCK_PARTS = frozenset(
    {"norm1", "norm2", "norm3", "attn1", "attn2", "ffn", "scale_shift_table"}
    | {"self_attn", "cross_attn", "modulation"}
)


def _at(key: str, origin: Mapping[str, str] | None) -> str:
    """A key for a message, with the shard it came from when the LoRA is a folder."""
    return f"{key!r} (in {origin[key]})" if origin and key in origin else repr(key)


def _extra_path(key: str) -> str | None:
    """The unwrapped path of a plain weight of an extra (non-base) module, or None.

    None for LoRA keys and for anything else; :func:`parse_lora_key` then accepts the
    key or names what is wrong with it.
    """
    if _TENSOR_RE.match(key):
        return None
    path = _strip_prefixes(key)
    parts = path.split(".")
    if len(parts) < 2 or any(p.startswith(("lora_", "dora_")) for p in parts):
        return None
    if parts[-1] in ("alpha", "diff", "diff_b") or path.startswith(_MUSUBI_PREFIX):
        return None
    if parts[0] == "blocks":
        if len(parts) < 4 or not parts[1].isdigit() or parts[2] in _BASE_BLOCK_PARTS:
            return None
    elif parts[0] in _BASE_TOP_ROOTS:
        return None
    return path


def _extra_root(path: str) -> str:
    """The module an extra weight belongs to: ``dwpose_embedding``, ``blocks.3.audio_attn``."""
    parts = path.split(".")
    return ".".join(parts[:3]) if parts[0] == "blocks" else parts[0]


def _count_roots(paths: Iterable[str]) -> str:
    """``dwpose_embedding (12 tensors), blocks.*.audio_attn (8 tensors)``."""
    counts = Counter(re.sub(r"^blocks\.\d+\.", "blocks.*.", _extra_root(p)) for p in paths)
    return ", ".join(f"{root} ({n} tensor{'s' * (n != 1)})" for root, n in counts.items())


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
) -> tuple[dict[str, LoraTensors], str, dict[str, str]]:
    """Normalise; also return the detected form and the first original key per module.

    ``origin`` (key -> shard file name) only adds file names to the messages.
    """
    if not state_dict:
        raise SviError("LoRA state dict is empty")
    slots: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
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
    return entries, form or "diffusers", first_keys


def normalize_lora_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, alphas: Mapping[str, float] | None = None
) -> dict[str, LoraTensors]:
    """Normalise a LoRA state dict of any supported form.

    Returns ``{diffusers module path: LoraTensors(down, up, scale)}`` where
    ``scale = alpha / rank``; alpha comes from ``.alpha`` keys, else from ``alphas``
    (per module path, e.g. read from a file header), else equals the rank.
    Raises :class:`SviError` on unknown or mixed key forms, naming the first bad key,
    and on plain weights of extra modules (:func:`read_lora` returns those apart).
    """
    _refuse_extras(state_dict, "read_lora() returns them apart from the LoRA pairs")
    lookup: AlphaLookup | None = None
    if alphas is not None:
        table = dict(alphas)

        def lookup(module: str, rank: int) -> float | None:
            return table.get(module)

    return _normalize(state_dict, lookup)[0]


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


# -------------------------------------------------------------------------- files


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
    DiT's own modules are refused (full-weight fine-tunes are not LoRAs).
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
        form, first_keys = "diffusers", {}
    else:
        alpha_of = _alpha_from_header(header, source)
        entries, form, first_keys = _normalize(lora_sd, alpha_of, origin)
    if source == "<state dict>":
        source = f"<{form} state dict>"
    return LoraContents(source, form, entries, first_keys, extras, extra_keys)


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
    entries, _, _ = _normalize(state_dict)
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


# -------------------------------------------------------------------------- apply


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
    arithmetic, cast back). ``merge=False`` attaches a peft adapter (removable with
    :func:`remove_lora`, rescalable with :func:`set_lora_scale`). Every LoRA module
    must exist in the model with matching shapes, else :class:`SviError`; nothing is
    modified when a check fails.

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
    targets = _resolve_targets(transformer, entries, contents.first_keys, source) if entries else {}
    extra_targets = _resolve_extras(transformer, contents)
    _check_extras_free(transformer, extra_targets)
    if merge:
        if adapter_name is not None:
            raise SviError("adapter_name is only meaningful with merge=False")
        _merge(targets, entries, float(scale))
    else:
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
    )
    logger.info(report.summary())
    return report


def _lora_layers(transformer: nn.Module, adapter_name: str) -> Iterator[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            yield name, module


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


# ----------------------------------------------------------------------- training

_INIT = {"default": True, "gaussian": "gaussian"}


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
