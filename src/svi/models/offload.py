"""Memory modes: where a model's weights live while clips are made, and in which dtype.

Every mode is one of the ecosystem's own hooks, applied as diffusers' pipelines apply
them - nothing here moves a weight by hand:

=========== ================================================================================
offload     what stays on the accelerator
=========== ================================================================================
none        every component (the text encoder only while it encodes the prompt stream)
model       one whole component at a time: accelerate ``cpu_offload_with_hook``, chained in
            the order the clip loop runs them (VAE -> CLIP -> DiT [-> DiT 2] -> VAE), as
            diffusers' ``enable_model_cpu_offload``
group       one DiT block at a time: diffusers ``apply_group_offloading`` with
            ``offload_type="block_level"``, ``num_blocks_per_group=1`` and - on CUDA only -
            a side stream that loads the next block while one runs; the other components
            get the same call (as ``DiffusionPipeline.enable_group_offload``) without stream
sequential  one layer at a time: ``apply_group_offloading(offload_type="leaf_level")`` on
            every component, no stream (diffusers' documented equivalent of
            ``enable_sequential_cpu_offload``, and the form that composes with fp8 casting)
=========== ================================================================================

``weights_dtype``: ``auto`` (bf16 on a GPU, float32 on CPU), ``bf16``, or ``fp8`` - the
DiT's weights stored as ``float8_e4m3fn`` and cast layer by layer to the compute dtype
(``auto``'s) by diffusers' layerwise casting (``ModelMixin.enable_layerwise_casting``; its
default skip list keeps the patch embedding, condition embedders and norms in the compute
dtype). ``vae_tiling`` turns on ``AutoencoderKLWan.enable_tiling`` (256-px tiles, blended:
frames differ slightly above that size); every offloading mode also turns on the VAE's
batch slicing (one video at a time; a single video is unaffected).

The text encoder runs once for the whole prompt stream, then goes back to the host: it has
its own whole-component hook (leaf-level group offloading in ``sequential``), and
:meth:`Placement.release_text` offloads it after every encoding.

Offloading changes where weights are, not the math: the frames equal those of ``none``
bit for bit (``tests/test_offload.py``). fp8 storage rounds the weights; VAE tiling blends
tiles. A run's mode is recorded in its manifest (:meth:`MemoryMode.record`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from svi.errors import SviError

log = logging.getLogger(__name__)

__all__ = [
    "OFFLOAD_MODES",
    "WEIGHTS_DTYPES",
    "MemoryMode",
    "Placement",
    "execution_device",
    "place",
]

OFFLOAD_MODES = ("none", "model", "group", "sequential")
WEIGHTS_DTYPES = ("auto", "bf16", "fp8")
FP8 = torch.float8_e4m3fn


def execution_device() -> torch.device:
    """Where clips are computed: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class MemoryMode:
    """How weights are held during generation (module doc). The defaults are today's:
    everything on the accelerator, in the device's natural dtype."""

    offload: str = "none"
    weights_dtype: str = "auto"
    vae_tiling: bool = False

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise SviError(f"unknown offload mode {self.offload!r}; use one of "
                           + ", ".join(OFFLOAD_MODES))  # fmt: skip
        if self.weights_dtype not in WEIGHTS_DTYPES:
            raise SviError(f"unknown weights dtype {self.weights_dtype!r}; use one of "
                           + ", ".join(WEIGHTS_DTYPES))  # fmt: skip

    @classmethod
    def from_options(
        cls, offload: str | None, weights_dtype: str | None, vae_tiling: bool | None
    ) -> MemoryMode:
        """The mode of command-line options (None: the default)."""
        given = {"offload": offload, "weights_dtype": weights_dtype, "vae_tiling": vae_tiling}
        return cls(**{k: v for k, v in given.items() if v is not None})

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the DiT computes in (and loads in): bf16 when asked or on a GPU."""
        if self.weights_dtype == "bf16" or device.type == "cuda":
            return torch.bfloat16
        return torch.float32

    def storage_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the DiT's weights are stored in."""
        return FP8 if self.weights_dtype == "fp8" else self.compute_dtype(device)

    def record(self, device: torch.device) -> dict[str, Any]:
        """The manifest's ``memory`` entry."""
        return {"offload": self.offload, "weights_dtype": self.weights_dtype,
                "storage_dtype": str(self.storage_dtype(device)).removeprefix("torch."),
                "compute_dtype": str(self.compute_dtype(device)).removeprefix("torch."),
                "vae_tiling": self.vae_tiling, "device": device.type}  # fmt: skip


@dataclass
class Placement:
    """A bundle after :func:`place`: the hooks it holds and the device clips run on."""

    mode: MemoryMode
    device: torch.device
    text_hook: Any = None  # accelerate UserCpuOffloadHook of the text encoder (or None)
    hooks: list[Any] = field(default_factory=list)  # the other components' model hooks

    def release_text(self) -> None:
        """Send the text encoder back to the host (a no-op when it is there)."""
        if self.text_hook is not None:
            self.text_hook.offload()


def place(bundle, mode: MemoryMode, device: torch.device | None = None, *, encode=None):
    """Apply ``mode`` to a loaded bundle (weights on the host, LoRAs already merged).

    ``encode()`` - the prompt stream's encoding - runs after the text encoder is hooked
    and before anything else reaches the accelerator; the text encoder is released after
    it. Returns the :class:`Placement`.
    """
    device = device or execution_device()
    placement = Placement(mode, device)
    text_model = getattr(bundle.text_encoder, "model", None)
    if isinstance(text_model, torch.nn.Module):
        placement.text_hook = _place_text(text_model, mode, device)
        bundle.text_encoder.execution_device = device  # its inputs go there, not to the host
    if encode is not None:
        encode()
    placement.release_text()
    dits = [d for d in (bundle.transformer, bundle.transformer_2) if d is not None]
    if mode.weights_dtype == "fp8":
        for dit in dits:
            _cast_fp8(dit, mode.compute_dtype(device))
    vae = getattr(bundle.codec, "vae", None)
    if vae is not None:
        _configure_vae(vae, mode)
        bundle.codec.execution_device = device
    clip = bundle.image_model
    others = [m for m in (vae, clip) if m is not None]
    if mode.offload == "none":
        for module in (*dits, *others):
            module.to(device)
    elif mode.offload == "model":
        placement.hooks = _model_ring([*others, *dits], device)
    else:
        leaf = mode.offload == "sequential"
        stream = not leaf and device.type == "cuda"
        for dit in dits:
            _group(dit, device, leaf=leaf, stream=stream)
        for module in others:
            _group(module, device, leaf=leaf, stream=False)
    log.info("memory mode: offload %s, weights %s on %s", mode.offload,
             str(mode.storage_dtype(device)).removeprefix("torch."), device)  # fmt: skip
    return placement


def _place_text(model: torch.nn.Module, mode: MemoryMode, device: torch.device):
    """The text encoder's hook: leaf-level groups in ``sequential`` (returns None: the
    groups go back after every layer), else one whole-component hook."""
    if mode.offload == "sequential":
        _group(model, device, leaf=True, stream=False)
        return None
    from accelerate import cpu_offload_with_hook

    return cpu_offload_with_hook(model, device)[1]


def _cast_fp8(dit: torch.nn.Module, compute: torch.dtype) -> None:
    """fp8 storage, ``compute`` dtype math: diffusers' layerwise casting of the DiT."""
    try:
        torch.zeros(1).to(FP8)
    except (RuntimeError, TypeError) as exc:  # pragma: no cover - every torch >= 2.1 has it
        raise SviError(f"this torch build cannot store float8 weights ({exc})") from exc
    dit.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=compute)


def _configure_vae(vae: torch.nn.Module, mode: MemoryMode) -> None:
    if mode.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if mode.offload != "none" and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()


def _model_ring(modules: list[torch.nn.Module], device: torch.device) -> list[Any]:
    """accelerate whole-component hooks, each sending the previous component back to the
    host when it runs; the first one closes the ring (the VAE of the next clip sends the
    last DiT back)."""
    from accelerate import cpu_offload_with_hook

    hooks: list[Any] = []
    for module in modules:
        hooks.append(cpu_offload_with_hook(module, device, hooks[-1] if hooks else None)[1])
    if len(hooks) > 1:
        hooks[0].hook.prev_module_hook = hooks[-1]
    return hooks


def _group(module: torch.nn.Module, device: torch.device, *, leaf: bool, stream: bool) -> None:
    from diffusers.hooks import apply_group_offloading

    kwargs = {"offload_type": "leaf_level"} if leaf else {
        "offload_type": "block_level", "num_blocks_per_group": 1}  # fmt: skip
    apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                           use_stream=stream, **kwargs)  # fmt: skip
