"""SVI-Dance's pose path: a Conv3d encoder of the pose video, added to the patch tokens.

The released encoder (``dwpose_embedding`` in the Dance file, built in
svi_video_dance.py:255-268) is an ``nn.Sequential`` of 7 Conv3d layers with SiLU
between them, so its weights are ``dwpose_embedding.{0,2,4,6,8,10,12}.{weight,bias}``:

====  ==================  ==========  ===================  =======
 idx   channels            kernel      stride (t, h, w)     padding
====  ==================  ==========  ===================  =======
 0     3 -> 16             3           1, 1, 1              1
 2     16 -> 16            3           1, 1, 1              1
 4     16 -> 16            3           1, 1, 1              1
 6     16 -> 16            3           1, 2, 2              1
 8     16 -> 16            3           2, 2, 2              1
 10    16 -> 16            3           2, 2, 2              1
 12    16 -> DiT width     1, 2, 2     1, 2, 2              0
====  ==================  ==========  ===================  =======

Total stride 4 in time and 16 in space: Wan's VAE (4, 8) times its patch (1, 2, 2).
:class:`PoseEncoderConfig` keeps the layer list and moves the stride-2 steps to fit
another model: the world model (pixel codec, patch (1, 4, 4)) needs stride 1 in time
and 4 in space, so layers 6 and 12 stride 2 in space and the others 1.

Input (:func:`pose_input`): pose frames / 255 (values in [0, 1]) with the first frame
repeated ``tf - 1`` more times in front (3 on Wan, none for the world model), so
F = 1 + tf k frames become k + 1 latent frames. The output (B, width, f, h, w) is
added to the patch embedding's output by a forward hook on ``patch_embedding`` (the
released code adds the flattened tokens right after patchify: the same tokens, in the
same (f, h, w) order). The last layer starts at zero: an attached, untrained encoder
leaves the DiT unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from svi.errors import SviError

if TYPE_CHECKING:
    from svi.models.codec import Codec

logger = logging.getLogger(__name__)

__all__ = [
    "POSE_MODULE",
    "WAN_POSE_ENCODER",
    "PoseEncoder",
    "PoseEncoderConfig",
    "attach_pose_encoder",
    "detach_pose_encoder",
    "has_pose_encoder",
    "pose_condition",
    "pose_encoder_config",
    "pose_input",
]

POSE_MODULE = "dwpose_embedding"  # the module's name in the transformer and in the files
_STATE = "_svi_pose"


def _halvings(factor: int, most: int, what: str) -> int:
    """log2 of ``factor``, which must be a power of two with at most ``most`` halvings."""
    steps = factor.bit_length() - 1
    if factor < 1 or factor != 1 << steps or steps > most:
        raise SviError(
            f"the pose encoder's {what} stride must be one of 1, 2, ... {1 << most}, got {factor}"
        )
    return steps


@dataclass(frozen=True)
class PoseEncoderConfig:
    """Channels and total strides of the pose encoder (defaults: SVI-Dance on Wan 14B)."""

    out_channels: int  # the DiT width (5120 for Wan 2.1 14B)
    temporal_stride: int = 4  # codec temporal factor x patch t
    spatial_stride: int = 16  # codec spatial factor x patch h (= w)
    hidden_channels: int = 16
    in_channels: int = 3

    def __post_init__(self) -> None:
        _halvings(self.temporal_stride, 2, "temporal")
        _halvings(self.spatial_stride, 4, "spatial")
        if min(self.out_channels, self.hidden_channels, self.in_channels) < 1:
            raise SviError(f"invalid pose encoder channels in {self}")

    def strides(self) -> list[tuple[int, int, int]]:
        """Stride of each of the 7 convolutions (released order for Wan)."""
        s = _halvings(self.spatial_stride, 4, "spatial")
        t = _halvings(self.temporal_stride, 2, "temporal")
        last = 2 if s else 1  # the (1, 2, 2) head takes one spatial halving
        space = [2 if i < s - (s > 0) else 1 for i in range(3)]  # layers 6, 8, 10
        time = [1, *(2 if i < t else 1 for i in range(2))]
        return (
            [(1, 1, 1)] * 3 + [(time[i], space[i], space[i]) for i in range(3)] + [(1, last, last)]
        )


WAN_POSE_ENCODER = PoseEncoderConfig(out_channels=5120)


class PoseEncoder(nn.Sequential):
    """The released ``dwpose_embedding``: (B, 3, F + tf - 1, H, W) -> (B, width, f, h, w)."""

    def __init__(self, config: PoseEncoderConfig) -> None:
        c, strides = config, config.strides()
        layers: list[nn.Module] = []
        for i, stride in enumerate(strides[:-1]):
            cin = c.in_channels if i == 0 else c.hidden_channels
            layers += [nn.Conv3d(cin, c.hidden_channels, 3, stride, 1), nn.SiLU()]
        head = strides[-1]
        layers.append(nn.Conv3d(c.hidden_channels, c.out_channels, head, head, 0))
        super().__init__(*layers)
        self.config = config
        nn.init.zeros_(layers[-1].weight)  # type: ignore[arg-type]
        nn.init.zeros_(layers[-1].bias)  # type: ignore[arg-type]


def pose_encoder_config(transformer: nn.Module, codec: Codec) -> PoseEncoderConfig:
    """The pose encoder matching ``transformer`` (a WanTransformer3DModel) and ``codec``."""
    cfg = transformer.config  # type: ignore[attr-defined]
    pt, ph, pw = (int(p) for p in cfg.patch_size)
    if ph != pw:
        raise SviError(f"the pose encoder needs a square patch, got {tuple(cfg.patch_size)}")
    return PoseEncoderConfig(
        out_channels=int(cfg.num_attention_heads * cfg.attention_head_dim),
        temporal_stride=int(codec.temporal_factor) * pt,
        spatial_stride=int(codec.spatial_factor) * ph,
    )


def pose_input(frames: np.ndarray | torch.Tensor, temporal_factor: int) -> torch.Tensor:
    """(B, 3, F + tf - 1, H, W) float32 encoder input from pose frames with values 0-255.

    ``frames``: (F, H, W, 3) (a decoded pose video, the world's ``pose_frames``) or
    (B, 3, F, H, W). Divided by 255; the first frame is repeated ``tf - 1`` more times
    in front, as released.
    """
    if temporal_factor < 1:
        raise SviError(f"temporal factor must be >= 1, got {temporal_factor}")
    video = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.asarray(frames))
    if video.ndim == 4 and video.shape[-1] == 3:
        video = video.permute(3, 0, 1, 2)[None]  # (1, 3, F, H, W)
    if video.ndim != 5 or video.shape[1] != 3 or video.shape[2] < 1:
        raise SviError(
            f"pose frames must be (F, H, W, 3) or (B, 3, F, H, W), got {tuple(frames.shape)}"
        )
    video = video.to(torch.float32) / 255.0
    head = video[:, :, :1].expand(-1, -1, temporal_factor - 1, -1, -1)
    return torch.cat([head, video], dim=2)


@dataclass
class _PoseState:
    handles: list[RemovableHandle] = field(default_factory=list)
    pose: torch.Tensor | None = None
    # (pose, encoding) of the latest call without gradients: the same pose tensor object
    # (one clip's, at every sampler step) reuses it; a new clip brings a new tensor
    cached: tuple[torch.Tensor, torch.Tensor] | None = None


def _state(transformer: nn.Module) -> _PoseState | None:
    return getattr(transformer, _STATE, None)


def has_pose_encoder(transformer: nn.Module) -> bool:
    """Whether :func:`attach_pose_encoder` equipped ``transformer``."""
    return _state(transformer) is not None


def attach_pose_encoder(transformer: nn.Module, config: PoseEncoderConfig) -> PoseEncoder:
    """Add ``dwpose_embedding`` to ``transformer`` and the hook that adds its output.

    ``config.out_channels`` must be the transformer's width. Weights of a Dance file
    then load with ``svi.lora.apply_lora`` (its ``dwpose_embedding.*`` extras).
    """
    if has_pose_encoder(transformer):
        raise SviError("this transformer already has a pose encoder")
    cfg = transformer.config  # type: ignore[attr-defined]
    width = int(cfg.num_attention_heads * cfg.attention_head_dim)
    if config.out_channels != width:
        raise SviError(f"pose encoder width {config.out_channels} != transformer width {width}")
    param = next(transformer.parameters())
    encoder = PoseEncoder(config).to(param.device, param.dtype)
    setattr(transformer, POSE_MODULE, encoder)
    state = _PoseState()

    def add_pose(_module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        if state.pose is None:
            return out
        if state.cached is not None and state.cached[0] is state.pose:
            cond = state.cached[1]  # the same pose at the next sampler step: encoded once
        else:
            weight = encoder[0].weight  # type: ignore[union-attr]
            cond = encoder(state.pose.to(weight.device, weight.dtype))  # (B, width, f, h, w)
            # without gradients (sampling) a clip's pose is encoded once, not at every step
            state.cached = None if torch.is_grad_enabled() else (state.pose, cond)
        if cond.shape[2:] != out.shape[2:] or cond.shape[0] not in (1, out.shape[0]):
            raise SviError(
                f"the pose video gives tokens {tuple(cond.shape)} but the patch embedding "
                f"gives {tuple(out.shape)}; the pose video must have the clip's frames and "
                "size (first frame repeated tf - 1 times in front, see pose_input)"
            )
        return out + cond.to(out.dtype)

    state.handles.append(transformer.patch_embedding.register_forward_hook(add_pose))  # type: ignore[union-attr]
    setattr(transformer, _STATE, state)
    logger.info(
        "attached pose encoder: stride %d in time, %d in space, width %d",
        config.temporal_stride,
        config.spatial_stride,
        width,
    )
    return encoder


def detach_pose_encoder(transformer: nn.Module) -> None:
    """Remove the hook and the module :func:`attach_pose_encoder` added."""
    state = _state(transformer)
    if state is None:
        raise SviError("this transformer has no pose encoder")
    for handle in state.handles:
        handle.remove()
    delattr(transformer, POSE_MODULE)
    delattr(transformer, _STATE)


@contextmanager
def pose_condition(transformer: nn.Module, pose: torch.Tensor | None) -> Iterator[None]:
    """Add ``pose`` (from :func:`pose_input`) to the patch tokens of calls in the block.

    ``None`` leaves the patch tokens alone (the "no pose" branch of pose dropout).
    """
    state = _state(transformer)
    if state is None:
        raise SviError("this transformer has no pose encoder; attach_pose_encoder first")
    previous, state.pose = state.pose, pose
    try:
        yield
    finally:
        state.pose = previous
