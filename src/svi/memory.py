"""A memory model: predicted peak accelerator memory of a Wan generation, per component
and memory mode (:mod:`svi.models.offload`), before any weight is downloaded.

**Weights** come from the real classes (``WanTransformer3DModel``, ``UMT5EncoderModel``,
``CLIPVisionModelWithProjection``, ``AutoencoderKLWan``) built on the meta device with
accelerate's ``init_empty_weights`` from the official component configs (stored in
``svi/assets/wan-configs``; a Wan folder's own ``config.json`` files when a folder is
given), in the dtypes loading gives them: the DiT in the compute dtype except diffusers'
``_keep_in_fp32_modules`` (norms, time embedder, modulation tables), then - with fp8 -
diffusers' layerwise casting applied on the meta model; umT5 and CLIP in the compute
dtype; the VAE in float32 (as svi loads it).

**What each mode keeps on the accelerator** while a component runs: ``none`` every
weight (the text encoder only during its one pass over the prompt stream, before the
rest is placed); ``model`` the running component; ``group`` the DiT's weights outside its
blocks plus two blocks (the running one and the one the CUDA stream prefetches), the
other components whole; ``sequential`` the weights that belong to no layer plus the
largest layer. With fp8 the running layer also exists in the compute dtype.

**Activations** (inference, no gradients), bytes per token and batch row, counted from
the lines of diffusers' ``WanTransformerBlock`` / ``WanAttnProcessor`` that hold the most
tensors at once, for a compute dtype of ``b`` bytes and width ``D``, FFN width ``F``:
the rotary embedding of q (hidden, normed hidden, q, k, v, the output buffer in ``b``
bytes plus three float32 half-width products: ``(6b + 6) D``), the residual update after
the FFN (``(3b + 12) D``) and the GELU (``2b (D + F)``) - the largest of the three. The
clip has ``L = f * (H / 16) * (W / 16)`` tokens (``f = (F - 1) / 4 + 1`` latent frames,
the VAE's 8x and the patch's 2x); CFG doubles the batch rows (one batched call for both
branches). Attention is assumed to run in a memory-efficient kernel (flash /
memory-efficient SDPA, what ``F.scaled_dot_product_attention`` picks for bf16 on a GPU):
no ``L x L`` matrix, a workspace of one float32 log-sum-exp per row, head and query.
umT5 and CLIP: hidden states plus their materialised attention scores (umT5's position
bias forces the eager path).

**VAE** encode / decode estimate: the real VAE runs two temporal chunks on the meta device
(no memory, shapes only); the estimate is the causal-convolution caches it then holds
(two frames per causal conv) + the largest layer's input, its cache-padded copy and its
output, doubled for the residual branch's copy + the clip's pixels twice (the decoded
video grows by concatenation, chunk by chunk). With VAE tiling the same trace runs on one
256 x 256 tile and the pixels count three times.

Figures are GiB (2**30 bytes) of allocated tensors; the CUDA caching allocator's
reserve and fragmentation come on top. Not yet checked against a GPU run
(``benchmarks/gpu_memory_check.py`` measures it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from svi.errors import SviError
from svi.models.offload import FP8, OFFLOAD_MODES, MemoryMode

__all__ = [
    "CONFIG_DIR",
    "GIB",
    "MODELS",
    "Prediction",
    "WanModel",
    "component_configs",
    "markdown_table",
    "predict",
]

GIB = 2**30
CONFIG_DIR = Path(__file__).resolve().parent / "assets" / "wan-configs"
TEXT_TOKENS = 512  # umT5 tokens per prompt (the CLIP-conditioned DiT requires 512)
GPU = torch.device("cuda")  # the predictions are for a GPU: bf16 compute, CUDA streams


@dataclass(frozen=True)
class WanModel:
    """A released Wan I2V model: its component configs (files in :data:`CONFIG_DIR`)."""

    name: str
    transformer: str
    experts: int  # DiTs (Wan 2.2 A14B: a high- and a low-noise expert of one config)
    text: str = "umt5-xxl"
    vae: str = "vae-wan2.1"
    clip: str | None = None


MODELS: dict[str, WanModel] = {
    m.name: m
    for m in (
        WanModel("wan2.1-i2v-14b-480p", "transformer-wan2.1-i2v-14b", 1, clip="clip-vit-h-14"),
        WanModel("wan2.1-i2v-14b-720p", "transformer-wan2.1-i2v-14b", 1, clip="clip-vit-h-14"),
        WanModel("wan2.2-i2v-a14b", "transformer-wan2.2-i2v-a14b", 2),
    )
}


def _read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def component_configs(model: str | Path) -> tuple[str, dict[str, dict[str, Any] | None], int]:
    """(the model's name, its component configs, its number of DiT experts) for a preset
    name of :data:`MODELS` or a Wan diffusers folder (its own ``config.json`` files)."""
    if str(model) in MODELS and not Path(model).exists():
        m = MODELS[str(model)]
        names = {"transformer": m.transformer, "text_encoder": m.text, "vae": m.vae,
                 "image_encoder": m.clip}  # fmt: skip
        configs = {k: None if v is None else _read(CONFIG_DIR / f"{v}.json")
                   for k, v in names.items()}  # fmt: skip
        return m.name, configs, m.experts
    from svi.models.wan import detect_wan_variant

    folder = Path(model)
    if not folder.is_dir():
        raise SviError(f"--model {model} is neither a folder nor one of {', '.join(MODELS)}")
    variant = detect_wan_variant(folder)
    if variant not in MODELS:
        raise SviError(f"the memory model covers {', '.join(MODELS)}; {folder} is {variant}")
    configs = {}
    for name in ("transformer", "text_encoder", "vae", "image_encoder"):
        path = folder / name / "config.json"
        configs[name] = _read(path) if path.is_file() else None
    return variant, configs, MODELS[variant].experts


# ----------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class Weights:
    """Bytes of one component's weights as they are held (see the module doc)."""

    params: int  # parameter count
    total: int  # every weight
    block: int = 0  # the largest repeated block (DiT)
    outside: int = 0  # weights outside the blocks (group offloading keeps them per pass)
    layer: int = 0  # the largest layer
    cast: int = 0  # the largest fp8-stored layer's copy in the compute dtype (while it runs)
    loose: int = 0  # weights in no layer (leaf-level offloading keeps them per pass)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _weights(module: torch.nn.Module, compute: torch.dtype, blocks: str | None = None) -> Weights:
    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS as LAYERS

    params = list(module.parameters())
    leaves = [m for m in module.modules() if isinstance(m, LAYERS)]
    in_layers = {id(p) for m in leaves for p in m.parameters()}

    def cast_bytes(m: torch.nn.Module) -> int:
        if not any(p.dtype == FP8 for p in m.parameters()):
            return 0
        return sum(p.numel() for p in m.parameters()) * compute.itemsize

    loose = [p for p in params if id(p) not in in_layers] + list(module.buffers())
    block = outside = 0
    if blocks is not None:
        stack = getattr(module, blocks)
        block = max(_bytes(b.parameters()) for b in stack)
        inside = {id(p) for b in stack for p in b.parameters()}
        outside = _bytes(p for p in params if id(p) not in inside)
    return Weights(params=sum(p.numel() for p in params), total=_bytes(params), block=block,
                   outside=outside, layer=max((_bytes(m.parameters()) for m in leaves), default=0),
                   cast=max(map(cast_bytes, leaves), default=0), loose=_bytes(loose))  # fmt: skip


@cache
def _dit_weights(config_json: str, compute: torch.dtype, fp8: bool) -> Weights:
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        dit = WanTransformer3DModel.from_config(json.loads(config_json))
    keep = set(dit._keep_in_fp32_modules or ())
    for name, p in dit.named_parameters():  # as from_pretrained(torch_dtype=compute) loads it
        p.data = p.data.to(torch.float32 if keep & set(name.split(".")) else compute)
    if fp8:
        dit.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=compute)
    return _weights(dit, compute, blocks="blocks")


@cache
def _text_weights(config_json: str, compute: torch.dtype) -> Weights:
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    with init_empty_weights():
        model = UMT5EncoderModel(UMT5Config(**json.loads(config_json)))
    model.tie_weights()  # the checkpoint's shared embedding is one tensor
    return _weights(model.to(compute), compute)


@cache
def _clip_weights(config_json: str, compute: torch.dtype) -> Weights:
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with init_empty_weights():
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**json.loads(config_json)))
    return _weights(model.to(compute), compute)


@cache
def _vae_weights(config_json: str) -> Weights:
    return _weights(_vae(config_json), torch.float32)  # svi keeps the Wan VAE in float32


@cache
def _vae(config_json: str):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan

    with init_empty_weights():
        return AutoencoderKLWan.from_config(json.loads(config_json)).eval()


# ----------------------------------------------------------------------------- activations


def latent_tokens(config: dict[str, Any], height: int, width: int, frames: int) -> int:
    """DiT tokens of one clip: latent frames x (H / 8 / p_h) x (W / 8 / p_w)."""
    pt, ph, pw = config.get("patch_size", (1, 2, 2))
    f = (frames - 1) // 4 + 1
    return math.ceil(f / pt) * (height // 8 // ph) * (width // 8 // pw)


def dit_activations(config: dict[str, Any], tokens: int, rows: int, b: int) -> int:
    """Bytes of one DiT forward's live activations (module doc): the block's costliest
    line, the rotary tables, the text / image context, the attention workspace."""
    heads, hd = config["num_attention_heads"], config["attention_head_dim"]
    d, f = heads * hd, config["ffn_dim"]
    per_token = max((6 * b + 6) * d, (3 * b + 12) * d, 2 * b * (d + f))
    rope = 2 * tokens * hd * 4  # cos and sin, float32, shared by the rows
    context = rows * (TEXT_TOKENS + 257) * d * b * 3  # states, k and v of the cross-attention
    workspace = rows * heads * tokens * 4  # flash / memory-efficient SDPA log-sum-exp
    return rows * tokens * per_token + rope + context + workspace


def encoder_activations(tokens: int, width: int, ffn: int, heads: int, layers: int, b: int) -> int:
    """Bytes of a text / image transformer's pass: its kept hidden states, one layer's
    widest tensors and its attention scores (materialised, float32 softmax)."""
    return (
        (layers + 1) * tokens * width * b
        + tokens * (4 * width + 3 * ffn) * b
        + (heads * tokens * tokens * (3 * b + 4))
    )


def sampler_tensors(tokens_latent: int, rows: int) -> int:
    """Latents, noise, velocity, y and the DiT input of the Euler loop (float32)."""
    return 8 * rows * 36 * tokens_latent * 4


@cache
def vae_activations(config_json: str, height: int, width: int, frames: int, tiled: bool) -> int:
    """Peak bytes of a clip's VAE encode or decode (module doc), traced on meta."""
    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS as LAYERS

    vae = _vae(config_json)
    h, w = (min(height, 256), min(width, 256)) if tiled else (height, width)
    video = 3 * frames * height * width * 4 * (3 if tiled else 2)
    return max(_trace(vae, vae.encoder, (1, 3, 5, h, w), LAYERS, encode=True),
               _trace(vae, vae.decoder, (1, vae.config.z_dim, 2, h // 8, w // 8), LAYERS,
                      encode=False)) + video  # fmt: skip


def _trace(vae, coder, shape, layers, *, encode: bool) -> int:
    """Caches + the largest layer's transient for two chunks of ``coder`` on meta."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    peak = [0]

    def hook(module, args, out):
        x = args[0]
        padded = x.numel() * (x.shape[2] + 2) // max(x.shape[2], 1) if x.ndim == 5 else 0
        size = (2 * x.numel() + padded + out.numel()) * x.element_size()
        if isinstance(module, (WanCausalConv3d, *layers)):
            peak[0] = max(peak[0], size)

    handles = [m.register_forward_hook(hook) for m in coder.modules() if isinstance(m, layers)]
    x = torch.zeros(shape, device="meta")
    try:
        with torch.no_grad():
            vae.clear_cache()
            if encode:
                cache_, idx = vae._enc_feat_map, vae._enc_conv_idx
                for part in (x[:, :, :1], x[:, :, 1:]):
                    idx[0] = 0
                    coder(part, feat_cache=cache_, feat_idx=idx)
            else:
                cache_, idx = vae._feat_map, vae._conv_idx
                for i in range(2):
                    idx[0] = 0
                    coder(x[:, :, i : i + 1], feat_cache=cache_, feat_idx=idx, first_chunk=i == 0)
            held = sum(t.numel() * t.element_size() for t in cache_ if isinstance(t, torch.Tensor))
    finally:
        for handle in handles:
            handle.remove()
        vae.clear_cache()
    return held + peak[0]


# ----------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class Phase:
    """One component's pass: what it and the mode keep on the accelerator meanwhile."""

    component: str
    params: int
    weights: int  # its own weights on the accelerator during its pass
    others: int  # other components' weights kept there meanwhile
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.others + self.activations


@dataclass(frozen=True)
class Prediction:
    model: str
    mode: MemoryMode
    height: int
    width: int
    frames: int
    tokens: int
    rows: int
    phases: list[Phase] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(p.total for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        phases = [{"component": p.component, "params": p.params,
                   **{f"{k}_gib": round(getattr(p, k) / GIB, 3)
                      for k in ("weights", "others", "activations", "total")}}
                  for p in self.phases]  # fmt: skip
        return {"model": self.model, "offload": self.mode.offload,
                "weights_dtype": self.mode.weights_dtype, "vae_tiling": self.mode.vae_tiling,
                "height": self.height, "width": self.width, "frames": self.frames,
                "tokens": self.tokens, "batch_rows": self.rows,
                "peak_gib": round(self.peak / GIB, 2), "phases": phases}  # fmt: skip


def _resident(w: Weights, offload: str, *, blocks: bool = False) -> int:
    """A component's weights on the accelerator during its own pass, under ``offload``
    (``blocks``: the DiT, block-offloaded in ``group`` with a prefetching stream)."""
    if offload == "sequential":
        return w.loose + w.layer + w.cast
    if offload == "group" and blocks:
        return w.outside + 2 * w.block + w.cast
    return w.total + w.cast


def predict(
    model: str | Path,
    mode: MemoryMode | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    frames: int | None = None,
    cfg: float | None = None,
    prompts: int = 2,
) -> Prediction:
    """Predicted accelerator memory of one clip of ``model`` (a :data:`MODELS` name or a
    Wan folder) under ``mode`` on a GPU; size, frames and CFG default to the preset's.
    ``prompts``: distinct prompts encoded (their states stay on the accelerator)."""
    from svi.models.presets import get_preset

    mode = mode or MemoryMode()
    name, configs, experts = component_configs(model)
    preset = get_preset(name)
    height, width = height or preset.height, width or preset.width
    frames = frames or preset.num_frames
    if height % 16 or width % 16 or (frames - 1) % 4:
        raise SviError(f"{width}x{height} x {frames} frames: sides must be multiples of 16 "
                       "and frames 4k+1")  # fmt: skip
    cfg = preset.cfg if cfg is None else cfg
    rows = 1 if cfg == 1 else 2
    compute = mode.compute_dtype(GPU)
    b = compute.itemsize
    dit_cfg = configs["transformer"]
    dit = _dit_weights(json.dumps(dit_cfg, sort_keys=True), compute, mode.weights_dtype == "fp8")
    text = _text_weights(json.dumps(configs["text_encoder"], sort_keys=True), compute)
    vae_json = json.dumps(configs["vae"], sort_keys=True)
    vae = _vae_weights(vae_json)
    clip = None
    if configs.get("image_encoder") is not None:
        clip = _clip_weights(json.dumps(configs["image_encoder"], sort_keys=True), compute)
    tokens = latent_tokens(dit_cfg, height, width, frames)
    off = mode.offload
    everything = experts * dit.total + vae.total + (clip.total if clip else 0)
    t = configs["text_encoder"]
    states = prompts * TEXT_TOKENS * t["d_model"] * 4  # cached text states, float32

    def others(own: int) -> int:  # weights of the other components kept meanwhile
        return everything - own if off == "none" else 0

    phases = [Phase("text encoder", text.params, _resident(text, off), 0, states
                    + encoder_activations(TEXT_TOKENS, t["d_model"], t["d_ff"], t["num_heads"],
                                          1, b))]  # fmt: skip
    if clip is not None:
        c = configs["image_encoder"]
        act = encoder_activations(257, c["hidden_size"], c["intermediate_size"],
                                  c["num_attention_heads"], c["num_hidden_layers"], b)  # fmt: skip
        phases.append(Phase("CLIP", clip.params, _resident(clip, off), others(clip.total),
                            act + states))  # fmt: skip
    latent = (frames - 1) // 4 + 1
    lat_tokens = latent * (height // 8) * (width // 8)
    act = dit_activations(dit_cfg, tokens, rows, b) + sampler_tensors(lat_tokens, rows) + states
    own = _resident(dit, off, blocks=True)
    for i in range(experts):
        label = "DiT" if experts == 1 else ("DiT high-noise", "DiT low-noise")[i]
        phases.append(Phase(label, dit.params, own, others(dit.total), act))
    vae_act = vae_activations(vae_json, height, width, frames, mode.vae_tiling)
    phases.append(Phase("VAE", vae.params, _resident(vae, off), others(vae.total),
                        vae_act + states))  # fmt: skip
    return Prediction(name, mode, height, width, frames, tokens, rows, phases)


def markdown_table(models=tuple(MODELS), dtypes=("bf16", "fp8"), **size) -> str:
    """The README table: predicted peak GiB per model, offload mode and weights dtype,
    with the component whose pass sets it."""
    head = "| model (clip) | weights | " + " | ".join(OFFLOAD_MODES) + " |"
    lines = [head, "|" + " --- |" * (2 + len(OFFLOAD_MODES))]
    for model in models:
        for dtype in dtypes:
            cells = []
            for off in OFFLOAD_MODES:
                p = predict(model, MemoryMode(offload=off, weights_dtype=dtype), **size)
                top = max(p.phases, key=lambda ph: ph.total).component.split()[0]
                cells.append(f"{p.peak / GIB:.1f} ({top.replace('text', 'umT5')})")
            label = f"{model} ({p.width}x{p.height}, {p.frames} frames)"
            lines.append(f"| {label} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(
    model: str | Path,
    offloads: tuple[str, ...] = OFFLOAD_MODES,
    weights_dtype: str | None = None,
    vae_tiling: bool | None = None,
    **size: Any,
) -> str:
    """``svi info --memory``: GiB on the accelerator while each component runs (its
    weights, what the mode keeps of the others, its activations), per offload mode."""
    preds = [predict(model, MemoryMode.from_options(o, weights_dtype, vae_tiling), **size)
             for o in offloads]  # fmt: skip
    p = preds[0]
    dtype = p.mode.storage_dtype(GPU)
    tiling = "on" if p.mode.vae_tiling else "off"
    lines = [f"{p.model}: {p.width}x{p.height}, {p.frames} frames -> {p.tokens} DiT tokens, "
             f"batch {p.rows} (CFG {'on' if p.rows == 2 else 'off'}), DiT weights "
             f"{str(dtype).removeprefix('torch.')}, VAE tiling {tiling}",
             "predicted GiB on the accelerator while each component runs "
             "(not measured on a GPU yet; docs/memory.md)", ""]  # fmt: skip
    width = max(len(ph.component) for ph in p.phases)
    lines.append(
        f"{'component':<{width}}  {'params':>8}  " + "  ".join(f"{o:>10}" for o in offloads)
    )
    for i, ph in enumerate(p.phases):
        cells = "  ".join(f"{q.phases[i].total / GIB:>10.1f}" for q in preds)
        lines.append(f"{ph.component:<{width}}  {ph.params / 1e9:>7.2f}B  {cells}")
    lines.append(
        f"{'peak':<{width}}  {'':>8}  " + "  ".join(f"{q.peak / GIB:>10.1f}" for q in preds)
    )
    return "\n".join(lines)
