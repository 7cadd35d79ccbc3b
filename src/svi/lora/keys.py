"""LoRA tensor keys: the key forms, one key parsed into its diffusers module path.

Training wrappers are stripped in one place (:func:`_strip_prefixes`). Plain weights
of extra modules (:func:`_extra_path`) are told apart from LoRA keys here too.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Literal, NamedTuple

from svi.errors import SviError

__all__ = ["LoraKey", "parse_lora_key", "wan_module_name"]

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


class LoraKey(NamedTuple):
    """One parsed LoRA tensor key."""

    module: str  # diffusers module path, e.g. "blocks.0.attn1.to_q"
    kind: Literal["A", "B", "alpha"]
    # diffusers | peft | wan | svi | musubi; None for alpha keys (they carry no adapter
    # segment, so they cannot tell svi from wan) and for names common to all forms.
    form: str | None
    adapter: str | None  # peft adapter segment ("default"), if any


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
