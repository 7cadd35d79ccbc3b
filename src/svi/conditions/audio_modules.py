"""SVI-Talk's audio path on a diffusers ``WanTransformer3DModel``: projection + per-block
cross-attention, laid out as MultiTalk's modules so their weights load by name.

- ``transformer.audio_proj`` (:class:`AudioProjection`): the windows of each latent
  frame (:class:`~svi.conditions.windows.LatentAudio`) -> K tokens of width
  ``context_dim`` per latent frame: ``proj1`` (latent frame 0) / ``proj1_vf`` (later
  frames), ReLU, ``proj2``, ReLU, ``proj3``, LayerNorm ``norm``.
- ``transformer.blocks.N.norm_x`` (LayerNorm in fp32, affine) and
  ``transformer.blocks.N.audio_cross_attn`` (:class:`AudioCrossAttention`: ``q_linear``,
  ``kv_linear``, ``proj``): after the block's text cross-attention,
  ``x = x + audio_cross_attn(norm_x(x), tokens)``, where the tokens of latent frame j
  are seen only by the video tokens of latent frame j (block-diagonal attention).

``proj`` starts at zero, so an attached model computes exactly what the base model
does until it is trained or loaded.

How it runs inside diffusers' code, untouched: forward hooks. A pre-hook on the
transformer projects the audio set by :func:`audio_condition` once per call; in every
block a pre-hook on ``norm2`` (the text cross-attention's input norm, fed the residual
stream) keeps the residual ``x``, and a hook on ``attn2`` returns
``attn2(...) + audio_cross_attn(norm_x(x + attn2(...)))``, so the block's own
``x = x + attn_output`` adds both. Module names stay those of diffusers (LoRA keys
keep working) and gradient checkpointing re-runs the hooks with the block (the
tokens of a call stay until the next call, so run a call's backward before the next
call's forward). The only difference from the released order ``(x + a) + b`` is the
float rounding of ``x + (a + b)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from torch import nn
from torch.utils.hooks import RemovableHandle

from svi.conditions.audio import N_MELS
from svi.conditions.windows import LatentAudio
from svi.errors import SviError

logger = logging.getLogger(__name__)

__all__ = [
    "MULTITALK_AUDIO",
    "WORLD_AUDIO",
    "AudioCrossAttention",
    "AudioModulesConfig",
    "AudioProjection",
    "attach_audio_modules",
    "audio_condition",
    "detach_audio_modules",
    "has_audio_modules",
]

_STATE = "_svi_audio"  # attribute of the transformer holding hooks and the current audio


@dataclass(frozen=True)
class AudioModulesConfig:
    """Shapes of the audio modules (defaults: MultiTalk / SVI-Talk on Wan 2.1 14B)."""

    feature_dim: int  # per-frame feature size: layers x width (12 x 768) or n_mels
    temporal_factor: int = 4  # the codec's: video frames per later latent frame
    window: int = 5  # video frames per window (2 r + 1)
    intermediate_dim: int = 512
    context_tokens: int = 32  # audio tokens per latent frame
    context_dim: int = 768  # width of the audio tokens
    norm_output: bool = True

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.temporal_factor, self.window) < 1 or self.window % 2 == 0:
            raise SviError(f"invalid audio module config {self}")

    @property
    def window_later(self) -> int:
        """Rows of a later latent frame: ``window + temporal_factor - 1`` (8 on Wan)."""
        return self.window + self.temporal_factor - 1


MULTITALK_AUDIO = AudioModulesConfig(feature_dim=12 * 768)
# The world model: log-mel features, pixel codec (tf 1), tokens as wide as its DiT (128).
# A starting point sized to the 1.3 M-parameter DiT, not a tuned setting.
WORLD_AUDIO = AudioModulesConfig(
    feature_dim=N_MELS, temporal_factor=1, intermediate_dim=128, context_tokens=4, context_dim=128
)


class AudioProjection(nn.Module):
    """Windows per latent frame -> ``context_tokens`` tokens per latent frame.

    Named like MultiTalk's ``AudioProjModel`` (``proj1``, ``proj1_vf``, ``proj2``,
    ``proj3``, ``norm``).
    """

    def __init__(self, config: AudioModulesConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.proj1 = nn.Linear(c.window * c.feature_dim, c.intermediate_dim)
        self.proj1_vf = nn.Linear(c.window_later * c.feature_dim, c.intermediate_dim)
        self.proj2 = nn.Linear(c.intermediate_dim, c.intermediate_dim)
        self.proj3 = nn.Linear(c.intermediate_dim, c.context_tokens * c.context_dim)
        self.norm: nn.Module = nn.LayerNorm(c.context_dim) if c.norm_output else nn.Identity()

    def forward(self, audio: LatentAudio) -> torch.Tensor:
        """(B, n, K, context_dim) tokens of ``audio`` (B, 1, W, *D) + (B, n-1, W', *D)."""
        c = self.config
        first, later = audio
        b = first.shape[0]
        want = (c.window * c.feature_dim, c.window_later * c.feature_dim)
        got = (math.prod(first.shape[2:]), math.prod(later.shape[2:]))
        if first.shape[1] != 1 or later.shape[0] != b or got != want:
            raise SviError(
                f"audio windows {tuple(first.shape)} + {tuple(later.shape)} do not fit the audio "
                f"projection (window {c.window}, later windows {c.window_later}, "
                f"{c.feature_dim} features per frame)"
            )
        h_first = torch.relu(self.proj1(first.flatten(2)))  # (B, 1, I)
        h_later = torch.relu(self.proj1_vf(later.flatten(2)))  # (B, n - 1, I)
        h = torch.relu(self.proj2(torch.cat([h_first, h_later], dim=1)))  # (B, n, I)
        tokens = self.proj3(h).unflatten(-1, (c.context_tokens, c.context_dim))
        return self.norm(tokens)  # (B, n, K, C)


class AudioCrossAttention(nn.Module):
    """Each latent frame's video tokens attend to that frame's audio tokens only.

    Named like MultiTalk's ``SingleStreamAttention`` for one speaker (``q_linear``,
    ``kv_linear``, ``proj``; no q/k norm); ``proj`` is zero-initialised.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise SviError(f"width {dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x (B, n * S, dim) in (frame, h, w) order, tokens (B or 1, n, K, C) -> (B, n * S, dim)."""
        b, length, dim = x.shape
        n, k = int(tokens.shape[1]), int(tokens.shape[2])
        if length % n:
            raise SviError(f"{length} video tokens do not split into {n} latent frames of audio")
        if tokens.shape[0] not in (1, b):
            raise SviError(f"audio batch {tokens.shape[0]} does not match video batch {b}")
        h, d = self.num_heads, dim // self.num_heads
        q = self.q_linear(x).view(b * n, length // n, h, d).transpose(1, 2)  # (B n, H, S, d)
        kv = self.kv_linear(tokens.to(x.dtype)).expand(b, -1, -1, -1)
        k_, v = kv.reshape(b * n, k, 2, h, d).permute(2, 0, 3, 1, 4)  # 2 x (B n, H, K, d)
        out = F.scaled_dot_product_attention(q, k_, v)  # (B n, H, S, d)
        return self.proj(out.transpose(1, 2).reshape(b, length, dim))


@dataclass
class _AudioState:
    handles: list[RemovableHandle] = field(default_factory=list)
    audio: LatentAudio | None = None
    # (B, n, K, C) of the latest call; kept until the next one so that gradient
    # checkpointing's re-run of a block during backward sees the same tokens.
    tokens: torch.Tensor | None = None
    residual: dict[int, torch.Tensor] = field(default_factory=dict)
    # (audio, tokens) of the latest call without gradients: the same audio object (one
    # clip's, at every sampler step) reuses its tokens
    cached: tuple[LatentAudio, torch.Tensor] | None = None


def _state(transformer: nn.Module) -> _AudioState | None:
    return getattr(transformer, _STATE, None)


def has_audio_modules(transformer: nn.Module) -> bool:
    """Whether :func:`attach_audio_modules` equipped ``transformer``."""
    return _state(transformer) is not None


def _block_hooks(block: nn.Module, index: int, state: _AudioState) -> list[RemovableHandle]:
    def keep_residual(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if state.tokens is not None:
            state.residual[index] = args[0]  # the block's x (as float32) before attn2

    def add_audio(_module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        if state.tokens is None:
            return out
        x = state.residual.pop(index).to(out.dtype) + out  # what the block is about to hold
        return out + block.audio_cross_attn(block.norm_x(x), state.tokens)

    return [
        block.norm2.register_forward_pre_hook(keep_residual),
        block.attn2.register_forward_hook(add_audio),
    ]


def attach_audio_modules(
    transformer: nn.Module, config: AudioModulesConfig
) -> tuple[AudioProjection, list[AudioCrossAttention]]:
    """Give ``transformer`` (a ``WanTransformer3DModel``) the audio modules of ``config``.

    Adds ``audio_proj``, and ``norm_x`` + ``audio_cross_attn`` to every block, on the
    transformer's device and dtype, and the hooks that run them (module docstring).
    """
    if has_audio_modules(transformer):
        raise SviError("this transformer already has audio modules")
    cfg = transformer.config  # type: ignore[attr-defined]
    heads, dim = int(cfg.num_attention_heads), int(cfg.num_attention_heads * cfg.attention_head_dim)
    param = next(transformer.parameters())
    state = _AudioState()
    transformer.audio_proj = AudioProjection(config).to(param.device, param.dtype)
    attns = []
    for i, block in enumerate(transformer.blocks):  # type: ignore[attr-defined]
        block.norm_x = FP32LayerNorm(dim, float(cfg.eps), elementwise_affine=True)
        block.audio_cross_attn = AudioCrossAttention(dim, config.context_dim, heads)
        block.norm_x.to(param.device, param.dtype)
        block.audio_cross_attn.to(param.device, param.dtype)
        attns.append(block.audio_cross_attn)
        state.handles += _block_hooks(block, i, state)

    patch_t = int(cfg.patch_size[0])

    def project(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state.residual.clear()
        state.tokens = None
        if state.audio is None:
            return
        latents = args[0] if args else kwargs["hidden_states"]  # (B, C, f, h, w)
        frames = int(latents.shape[2]) // patch_t
        if state.audio.latent_frames != frames:
            raise SviError(
                f"the audio covers {state.audio.latent_frames} latent frames but the "
                f"transformer is called on {frames}"
            )
        if state.cached is not None and state.cached[0] is state.audio:
            state.tokens = state.cached[1]  # one clip's audio at the next step: projected once
            return
        p = transformer.audio_proj.proj1.weight
        state.tokens = transformer.audio_proj(state.audio.to(device=p.device, dtype=p.dtype))
        state.cached = None if torch.is_grad_enabled() else (state.audio, state.tokens)

    state.handles.append(transformer.register_forward_pre_hook(project, with_kwargs=True))
    setattr(transformer, _STATE, state)
    logger.info(
        "attached audio modules: %d tokens x %d per latent frame, %d blocks",
        config.context_tokens,
        config.context_dim,
        len(attns),
    )
    return transformer.audio_proj, attns


def detach_audio_modules(transformer: nn.Module) -> None:
    """Remove the hooks and the modules :func:`attach_audio_modules` added."""
    state = _state(transformer)
    if state is None:
        raise SviError("this transformer has no audio modules")
    for handle in state.handles:
        handle.remove()
    del transformer.audio_proj
    for block in transformer.blocks:  # type: ignore[attr-defined]
        del block.norm_x
        del block.audio_cross_attn
    delattr(transformer, _STATE)


@contextmanager
def audio_condition(transformer: nn.Module, audio: LatentAudio | None) -> Iterator[None]:
    """Condition the transformer's calls inside the block on ``audio``.

    ``None`` runs the blocks without the audio path (as the released model does when
    given no audio); ``audio.zeros_like()`` is the null audio of audio CFG.
    """
    state = _state(transformer)
    if state is None:
        raise SviError("this transformer has no audio modules; attach_audio_modules first")
    previous, state.audio = state.audio, audio
    try:
        yield
    finally:
        state.audio = previous
