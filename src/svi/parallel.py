"""Several processes for one video: diffusers' context parallelism, never a home-made exchange.

Started under ``torchrun`` / ``accelerate launch``, ``svi generate --parallel MODE``
splits every DiT forward of every clip across the processes with diffusers' context
parallelism for ``WanTransformer3DModel`` (its ``_cp_plan``: the video tokens are split
at ``blocks.0`` and gathered after ``proj_out``; the text / CLIP tokens stay whole on
every rank). ``MODE``:

- ``ulysses``: all-to-all of Q/K/V so each rank attends over every token for
  heads / N heads (``ContextParallelConfig(ulysses_degree=N)``); the attention heads
  (40 on Wan 14B) must divide by N.
- ``ring``: K/V blocks passed around the ranks (``ring_degree=N``); needs an attention
  kernel that returns the log-sum-exp, which on this diffusers is CUDA-only
  (``_native_cudnn``, ``flash``, ``sage``): refused on the CPU.
- ``usp``: Ulysses inside a node (``LOCAL_WORLD_SIZE`` ranks) x ring across nodes,
  the layout of xDiT's unified sequence parallelism for 2 nodes x 8 GPUs.

Every rank holds the whole model, draws the same noise (``svi.sampling`` seeds a CPU
generator per clip) and ends every forward with the whole prediction, so every rank
runs the same clip loop. Rank 0 alone is the session (:mod:`svi.session`): lock,
mp4, manifest, states; it tells the others where to start (:func:`share_start`).
docs/scaling.md has the throughput model and the launch commands.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from svi.errors import SviError

log = logging.getLogger(__name__)

MODES = ("ulysses", "ring", "usp")
# attention backends (diffusers' dispatcher) per mode and device; ring needs the
# log-sum-exp of each block, which diffusers' "native" SDPA backend does not return
_BACKENDS = {"ulysses": "native", "ring": "_native_cudnn", "usp": "_native_cudnn"}


@dataclass(frozen=True)
class Group:
    """This process's place in a context-parallel run."""

    mode: str
    rank: int
    world_size: int
    ulysses: int
    ring: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def record(self) -> dict[str, Any]:
        """The manifest's ``parallel`` entry (not an input: frames agree within float
        error, so a resume may use another world size)."""
        return {"mode": self.mode, "world_size": self.world_size, "ulysses": self.ulysses,
                "ring": self.ring, "nodes": self.world_size // _local_world_size()}  # fmt: skip


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "0")) or 1


def degrees(mode: str, world_size: int, local_world_size: int) -> tuple[int, int]:
    """(ulysses, ring) degrees of ``mode`` on ``world_size`` ranks."""
    if mode == "ulysses":
        return world_size, 1
    if mode == "ring":
        return 1, world_size
    if world_size % local_world_size:
        raise SviError(f"--parallel usp needs the same number of processes on every node "
                       f"({world_size} ranks, {local_world_size} per node)")  # fmt: skip
    return local_world_size, world_size // local_world_size


def start(mode: str) -> Group:
    """Join the launcher's process group (accelerate's PartialState: gloo on the CPU,
    NCCL on GPUs, one GPU per local rank) and check ``mode`` fits it."""
    if mode not in MODES:
        raise SviError(f"--parallel must be one of {', '.join(MODES)}, got {mode!r}")
    if "WORLD_SIZE" not in os.environ:
        raise SviError("--parallel needs several processes: start svi under torchrun or "
                       "accelerate launch (docs/scaling.md)")  # fmt: skip
    cuda = torch.cuda.is_available()
    if mode != "ulysses" and not cuda:
        raise SviError(
            f"--parallel {mode} needs a GPU: diffusers' ring attention asks its kernel for "
            "the log-sum-exp, and its CPU backend 'native' raises 'Native attention does "
            "not support return_lse=True'; use --parallel ulysses on the CPU"
        )
    if not cuda and torch.accelerator.device_count() == 0:
        raise SviError(
            "--parallel on the CPU: diffusers' enable_parallelism picks the device as "
            "rank % torch.accelerator.device_count(), which is 0 without an accelerator "
            "(ZeroDivisionError); run it on GPUs"
        )
    from accelerate import PartialState

    state = PartialState(cpu=not cuda)
    if state.num_processes < 2:
        raise SviError(f"--parallel {mode} needs at least 2 processes, got 1")
    ulysses, ring = degrees(mode, state.num_processes, _local_world_size())
    group = Group(mode, state.process_index, state.num_processes, ulysses, ring)
    log.info("context parallel %s: rank %d of %d (ulysses %d x ring %d)", mode, group.rank,
             group.world_size, ulysses, ring)  # fmt: skip
    return group


def enable(dits: list[torch.nn.Module], group: Group) -> None:
    """Apply diffusers' context parallelism to every DiT (both experts of Wan 2.2 A14B)."""
    from diffusers.models._modeling_parallel import ContextParallelConfig

    backend = _BACKENDS[group.mode]
    for dit in dits:
        heads = dit.config.num_attention_heads
        if heads % group.ulysses:
            raise SviError(f"--parallel {group.mode}: Ulysses splits the {heads} attention "
                           f"heads over {group.ulysses} ranks, which does not divide them; "
                           "use --parallel usp or ring")  # fmt: skip
        dit.set_attention_backend(backend)
        dit.enable_parallelism(
            config=ContextParallelConfig(ulysses_degree=group.ulysses, ring_degree=group.ring)
        )


def check_tokens(tokens: int, group: Group) -> None:
    """The video tokens of a clip must split evenly over the ranks (diffusers' plan
    splits them at ``blocks.0``)."""
    if tokens % group.world_size:
        raise SviError(f"--parallel: a clip has {tokens} video tokens, which do not split "
                       f"over {group.world_size} processes; change --height / --width / "
                       "--num-frames or the number of processes")  # fmt: skip


def share_start(group: Group, start: dict[str, Any] | BaseException | None) -> dict[str, Any]:
    """Rank 0 passes where the clip loop starts (first clip, carry) - or that it failed
    opening the output - to every rank; returns it on every rank."""
    import torch.distributed as dist

    box = [start if group.is_main else None]
    if group.is_main and isinstance(start, BaseException):
        box = [{"error": str(start)}]
    dist.broadcast_object_list(box, src=0)
    shared = box[0]
    if "error" in shared:
        if group.is_main and isinstance(start, BaseException):
            raise start
        raise SviError(f"rank 0 could not open the output: {shared['error']}")
    return shared


# --- training: accelerate's engines ----------------------------------------------------

_SHARDED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def check_training_engine(distributed_type: str) -> None:
    """Refuse a sharded launch (``accelerate launch`` with an FSDP / DeepSpeed config)
    that svi's training cannot honour, in one line, before any weight loads.

    On CPU processes accelerate never shards: ``AcceleratorState`` turns FSDP on only
    for accelerator process groups (MULTI_GPU, MULTI_XPU, ...) and DeepSpeed only
    ``not cpu``, so a CPU launch of an FSDP config runs as MULTI_CPU - plain data
    parallel - without a word. On GPUs the sharded run is not wired yet: the LoRA, its
    AdamW moments and the EMA would be DTensor shards, which svi's exact-resume
    checkpoint (whole safetensors tensors) and EMA do not gather (docs/scaling.md).
    """
    asked = [name for var, name in _SHARDED.items()
             if os.environ.get(var, "false").lower() == "true"]  # fmt: skip
    if not asked:
        return
    if distributed_type in ("FSDP", "DEEPSPEED"):
        raise SviError(f"sharded training ({asked[0]}) is not supported yet: svi's exact-"
                       "resume checkpoint and EMA hold whole tensors, not DTensor shards; "
                       "launch with data parallelism (docs/scaling.md)")  # fmt: skip
    raise SviError(f"{asked[0]} was asked for, but accelerate runs {distributed_type}: it "
                   "shards only on accelerators (AcceleratorState enables FSDP for MULTI_GPU "
                   "and the like, DeepSpeed only without cpu), so on CPU processes the run "
                   "would be plain data parallel; drop the sharded config")  # fmt: skip


def training_layout(distributed_type: str, world_size: int) -> dict[str, Any]:
    """A checkpoint's record of the process layout it was written by."""
    return {"distributed_type": distributed_type, "world_size": world_size,
            "nodes": max(1, world_size // _local_world_size())}  # fmt: skip
