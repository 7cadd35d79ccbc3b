"""LoRA tensor keys: the key forms, one key parsed into its diffusers module path.

Training wrappers are stripped in one place (:func:`_strip_prefixes`). Plain weights
of extra modules (:func:`_extra_path`) are told apart from LoRA keys here too.

Full-weight deltas. Besides low-rank pairs, the few-step distillation LoRAs people
stack with SVI (LightX2V's step/CFG-distilled Wan 2.1 I2V and Wan 2.2 A14B files,
CausVid, AccVideo; files extracted with ComfyUI's ``LoraSave``) carry plain deltas that
are ADDED to a base parameter. The key forms, as the two reference loaders read them:

- ``X.diff``: delta of ``X.weight`` - for the 1-d norm weights that no low-rank pair
  can express, and for whole matrices in "full diff" extractions (ComfyUI
  ``comfy/lora.py`` ``load_lora``, lines 72-76 at commit a125cd84; written by
  ``comfy_extras/nodes_lora_extract.py`` ``calc_lora_model``, lines 51-73). When ``X``
  names a parameter itself (``blocks.N.modulation``), the delta is of that parameter
  (ComfyUI maps keys that do not end in ``.weight`` to themselves, ``comfy/lora.py``
  lines 179-186).
- ``X.diff_b``: delta of ``X.bias`` (ComfyUI ``comfy/lora.py`` lines 78-82; diffusers
  0.42 ``lora_conversion_utils._convert_non_diffusers_wan_lora_to_diffusers`` turns it
  into peft's ``lora_B.bias``, lines 1906-1909, which is read here too).
- ``blocks.N.diff_m``: delta of the block's ``modulation`` (diffusers'
  ``scale_shift_table``), in LightX2V's Wan 2.1 I2V StepDistill-CfgDistill LoRAs
  (reported as not loaded by ComfyUI: github.com/Comfy-Org/ComfyUI/issues/8922) and
  Wan 2.2 I2V A14B 4-step LoRAs (stripped by rank-reduced re-uploads:
  huggingface.co/Banodoco/wan2.2-i2v-lightx2v-4step-loras).
- ``head.head.diff``: a whole head matrix (LightX2V's Wan 2.2 distill LoRAs; diffusers
  loads it as an A matrix with an identity B, lines 2019-2033: the same delta).

diffusers drops the norm deltas as "just zeroed values" (lines 1866-1871) and skips
other remaining ``.diff`` keys with an info message (lines 2074-2083); here every
delta is merged, so nothing in the file is silently ignored. Deltas have no rank and
no alpha: the user's strength scales them, as it does in ComfyUI.
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
# Original-Wan holders of full-weight deltas that are not LoRA targets -> diffusers.
# Wan's block norm3 (affine, before cross-attention) is diffusers' norm2; Wan's norm1
# and norm2 (and diffusers' norm1 / norm3) have no parameters.
_BLOCK_DELTA_MAP: dict[str, str] = {
    "norm3": "norm2",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
}
_TOP_DELTA_MAP: dict[str, str] = {
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
}
# Parameters that are no module's weight: Wan's modulation -> diffusers' scale_shift_table.
_MODULATIONS = ("modulation", "scale_shift_table")
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
    r"(?:\.(?P<adapter>[^.]+))?\.(?P<leaf>weight|bias)|(?P<alpha>alpha)"
    r"|(?P<delta>diff|diff_b|diff_m))$"
)
_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(.+)")
_MUSUBI_BLOCK_RE = re.compile(r"blocks_(\d+)_(self_attn|cross_attn|ffn)_(q|k|v|o|k_img|v_img|0|2)")


KeyKind = Literal["A", "B", "alpha", "B_bias", "delta"]


class LoraKey(NamedTuple):
    """One parsed LoRA tensor key.

    ``kind``: ``A`` / ``B`` the low-rank pair, ``alpha`` its scalar, ``B_bias`` peft's
    ``lora_B.bias`` (a bias delta scaled like the pair), ``delta`` a full-weight delta
    (``.diff``, ``.diff_b``, ``.diff_m``; see the module doc).
    """

    module: str  # diffusers module path, e.g. "blocks.0.attn1.to_q" ("" for a top parameter)
    kind: KeyKind
    # diffusers | peft | wan | svi | musubi; None for alpha keys (they carry no adapter
    # segment, so they cannot tell svi from wan), for deltas (neither) and for names
    # common to all forms.
    form: str | None
    adapter: str | None  # peft adapter segment ("default"), if any
    param: str | None = None  # B_bias / delta: the diffusers parameter it adds to


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


def _delta_target(key: str, path: str, suffix: str) -> tuple[str, str]:
    """(diffusers module, diffusers parameter) a full-weight delta adds to."""
    if suffix == "diff_m":  # LightX2V: X.diff_m is the delta of X.modulation
        path, suffix = f"{path}.modulation", "diff"
    block = _BLOCK_RE.fullmatch(path)
    if path in ("head.modulation", "scale_shift_table") or (block and block[2] in _MODULATIONS):
        if suffix != "diff":
            raise SviError(f"LoRA key {key!r}: a modulation has no bias")
        module = f"blocks.{block[1]}" if block else ""
        return module, f"{module}.scale_shift_table".lstrip(".")
    leaf = "weight" if suffix == "diff" else "bias"
    if block and block[2] in _BLOCK_DELTA_MAP:
        module = f"blocks.{block[1]}.{_BLOCK_DELTA_MAP[block[2]]}"
    elif path in _TOP_DELTA_MAP:
        module = _TOP_DELTA_MAP[path]
    else:
        module = _wan_to_diffusers(key, path)[0]
    return module, f"{module}.{leaf}"


def parse_lora_key(key: str) -> LoraKey:
    """Parse one LoRA tensor key of any supported form into its diffusers module path."""
    m = _TENSOR_RE.match(key)
    if m is None or (m["leaf"] == "bias" and m["mat"] in ("lora_A", "lora_down")):
        hint = ""
        if "dora_scale" in key:
            hint = " (DoRA is not supported)"
        elif ".lora_A" in key or ".lora_down" in key:
            hint = " (a LoRA down matrix has no bias)"
        elif key.endswith((".weight", ".bias")) and ".lora_" not in key:
            hint = (" (plain weights of the base model's modules are not supported; a "
                    "delta to add to one is named X.diff / X.diff_b)")  # fmt: skip
        raise SviError(f"unrecognised LoRA key {key!r}{hint}")
    adapter = m["adapter"]
    path = _strip_prefixes(m["path"])
    musubi = path.startswith(_MUSUBI_PREFIX)
    if musubi:
        path = _musubi_to_wan(key, path[len(_MUSUBI_PREFIX) :])
    if m["delta"]:
        module, param = _delta_target(key, path, m["delta"])
        return LoraKey(module, "delta", None, None, param)
    is_down = m["mat"] in ("lora_A", "lora_down")
    kind: KeyKind = "alpha" if m["alpha"] else "A" if is_down else "B"
    if m["leaf"] == "bias":
        kind = "B_bias"
    if musubi:
        module, _ = _wan_to_diffusers(key, path)
        param = f"{module}.bias" if kind == "B_bias" else None
        return LoraKey(module, kind, None if kind == "alpha" else "musubi", adapter, param)
    module, naming = _wan_to_diffusers(key, path)
    form: str | None
    if kind == "alpha" or naming is None:
        form = None
    elif naming == "wan":
        form = "svi" if adapter else "wan"
    else:
        form = "peft" if adapter else "diffusers"
    return LoraKey(module, kind, form, adapter, f"{module}.bias" if kind == "B_bias" else None)


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
    if parts[-1] in ("alpha", "diff", "diff_b", "diff_m") or path.startswith(_MUSUBI_PREFIX):
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
