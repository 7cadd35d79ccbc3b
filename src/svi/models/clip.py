"""CLIP image tokens of Wan 2.1 I2V: how a frame becomes the image encoder's input.

Two preprocessings (``GenerationPlan.clip_preprocess``, ``svi generate --clip-preprocess``):

- ``official`` (the default): as the authors' code does it. SVI's pipelines hand the
  first carried frame to ``WanImageEncoder.encode_image``
  (``diffsynth/models/wan_video_image_encoder.py`` lines 864-874 in
  vita-epfl/Stable-Video-Infinity at commit 34e4c50), after
  ``BasePipeline.preprocess_image`` (``diffsynth/pipelines/base.py`` line 45):
  the uint8 frame becomes float32 ``x * (2 / 255) - 1``; the WHOLE frame is resized to
  ``image_size`` x ``image_size`` (224 for Wan's ViT-H/14) by ``F.interpolate(mode=
  "bicubic", align_corners=False)`` - squashed, never cropped; ``* 0.5 + 0.5`` maps it
  back to [0, 1] (no clamp: bicubic overshoot stays), and ``T.Normalize`` with OpenAI
  CLIP's mean and std (lines 785-793 of the same file) makes the input.
- ``diffusers``: the folder's ``CLIPImageProcessor``, as diffusers'
  ``WanImageToVideoPipeline`` uses it: the short side resized, the centre cropped,
  rescaled and normalised. On a non-square frame CLIP sees only the centre square.

Both give ``(B, 3, S, S)`` pixel values; :func:`clip_tokens` runs the encoder and takes
``hidden_states[-2]`` (the output of the second-to-last block, the official
``use_31_block=True`` of a 32-block ViT).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from svi.errors import SviError

__all__ = [
    "CLIP_MEAN",
    "CLIP_PREPROCESSES",
    "CLIP_STD",
    "clip_pixels",
    "clip_tokens",
    "official_clip_pixels",
]

CLIP_PREPROCESSES = ("official", "diffusers")  # the first is the default
# OpenAI CLIP's normalisation, as the official transforms write it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def official_clip_pixels(
    frames: np.ndarray, size: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """uint8 frames ``(B, H, W, 3)`` -> float32 ``(B, 3, size, size)``, the official way.

    Every operation, its order and dtype, follows the official lines (module doc), frame
    by frame, on ``device`` (the authors run it where the encoder runs).
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SviError(f"expected uint8 frames (B, H, W, 3), got {frames.dtype} {frames.shape}")
    out = []
    for frame in frames:
        signed = frame.astype(np.float32) * (2 / 255) - 1  # (H, W, 3) in [-1, 1]
        x = torch.from_numpy(signed).permute(2, 0, 1).unsqueeze(0).to(device)  # (1, 3, H, W)
        out.append(F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False))
    x = torch.cat(out).mul_(0.5).add_(0.5)  # (B, 3, size, size), [0, 1] up to overshoot
    mean = torch.as_tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub_(mean).div_(std)


def clip_pixels(
    frames: np.ndarray,
    preprocess: str,
    *,
    encoder: Any,
    processor: Any = None,
) -> torch.Tensor:
    """The encoder's pixel values of uint8 frames ``(B, H, W, 3)`` (float32, on the
    encoder's device): ``official`` or the folder's ``processor`` (``diffusers``)."""
    device = next(encoder.parameters()).device
    if preprocess == "official":
        return official_clip_pixels(frames, int(encoder.config.image_size), device)
    if preprocess == "diffusers":
        if processor is None:
            raise SviError("--clip-preprocess diffusers needs the folder's image_processor")
        batch = processor(images=list(frames), return_tensors="pt")
        return batch["pixel_values"].to(device=device, dtype=torch.float32)
    raise SviError(
        f"unknown CLIP preprocessing {preprocess!r}; use one of {', '.join(CLIP_PREPROCESSES)}"
    )


@torch.no_grad()
def clip_tokens(encoder: Any, pixels: torch.Tensor) -> torch.Tensor:
    """``(B, N, D)`` image tokens: ``hidden_states[-2]`` of the CLIP vision model."""
    dtype = next(encoder.parameters()).dtype
    out = encoder(pixel_values=pixels.to(dtype), output_hidden_states=True)
    return out.hidden_states[-2]
