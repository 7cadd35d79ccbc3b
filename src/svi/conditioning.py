"""The image-to-video conditioning ``y`` of Wan I2V as SVI uses it (SVI_SPEC section 2).

``y`` = 4 mask channels + the codec latent of a conditioning video as long as the clip:

    conditioning video = [M motion frames] + [padding frames]      # (B, 3, F, H, W)
    padding  = "anchor": the anchor image repeated (SVI-Shot/Talk/Dance)
             | "zeros":  zeros in [-1, 1] pixel space (Wan, SVI-Film/Tom)
             | "last":   the last motion frame repeated (world base model)
    mask     = 1 on the given pixel frames, folded into latent frames like Wan:
               the first pixel frame is repeated ``temporal_factor`` times, then every
               group of ``temporal_factor`` pixel frames becomes one latent frame's
               mask channels (4 channels; repeated when ``temporal_factor`` < 4).
               mode "first": latent frame 0 only (SVI, even when M = 5);
               mode "motion": every motion frame.

The latent hand-off builds ``y`` from latents directly: no decode, no quantisation, no
re-encode. SVI 2.0 Pro's layout puts the anchor's latent first:
``[VAE(anchor), last m latents of the previous clip, zero latents]``, mask on latent
frame 0 only (:func:`build_y_anchor_first`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from svi.errors import SviError

MASK_CHANNELS = 4  # y = [4 mask channels, C latent channels] (SVI_SPEC section 2)


class _Encoder(Protocol):
    temporal_factor: int

    def encode(self, video: Tensor) -> Tensor: ...


def mask_frames_for(mode: str, motion_frames: int) -> int:
    """How many leading pixel frames the mask marks as given."""
    if mode == "first":
        return 1
    if mode == "motion":
        return motion_frames
    raise SviError(f"unknown mask mode {mode!r}; use 'first' or 'motion'")


def build_mask(
    batch: int, num_frames: int, height: int, width: int, given_frames: int, temporal_factor: int
) -> Tensor:
    """Mask channels (B, 4, f, h, w) marking the first ``given_frames`` pixel frames as given.

    ``height``/``width`` are latent sizes, ``num_frames`` pixel frames (F = k*tf + 1).
    """
    tf = temporal_factor
    if (num_frames - 1) % tf or MASK_CHANNELS % tf:
        raise SviError(f"{num_frames} frames do not fold into latent frames of {tf}")
    pixel = torch.zeros(num_frames)
    pixel[:given_frames] = 1.0
    folded = torch.cat([pixel[:1].repeat(tf), pixel[1:]])  # (tf * f,)
    per_latent = folded.view(-1, tf).repeat_interleave(MASK_CHANNELS // tf, dim=1)  # (f, 4)
    mask = per_latent.t()[None, :, :, None, None]  # (1, 4, f, 1, 1)
    return mask.expand(batch, -1, -1, height, width).contiguous()


def _pad(motion: Tensor, total: int, padding: str, anchor: Tensor | None, what: str) -> Tensor:
    """[motion] + padding along time: (B, C, m, h, w) -> (B, C, total, h, w).

    ``anchor`` is (B, C, 1, h, w) (an image or its latent); ``what`` names the frames
    in error messages.
    """
    b, c, m, h, w = motion.shape
    if not 1 <= m <= total:
        raise SviError(f"{m} motion {what} do not fit a clip of {total} {what}")
    pad = total - m
    if padding == "anchor":
        if anchor is None:
            raise SviError(f"anchor padding needs an anchor ({what})")
        fill = anchor[:, :, :1].expand(b, c, pad, h, w)
    elif padding == "zeros":
        fill = motion.new_zeros(b, c, pad, h, w)
    elif padding == "last":
        fill = motion[:, :, -1:].expand(b, c, pad, h, w)
    else:
        raise SviError(f"unknown padding {padding!r}; use 'anchor', 'zeros' or 'last'")
    return torch.cat([motion, fill.to(motion.dtype)], dim=2)


def conditioning_video(
    motion: Tensor, num_frames: int, padding: str, anchor: Tensor | None = None
) -> Tensor:
    """[motion frames] + [padding] as a (B, 3, F, H, W) video in [-1, 1].

    ``motion`` is (B, 3, M, H, W); ``anchor`` (B, 3, H, W) is needed for anchor padding.
    """
    anchor = None if anchor is None else anchor[:, :, None]
    return _pad(motion, num_frames, padding, anchor, "frames")


def build_y(
    codec: _Encoder,
    motion: Tensor,
    num_frames: int,
    *,
    padding: str,
    mask: str,
    anchor: Tensor | None = None,
) -> Tensor:
    """Pixel-path ``y`` (B, 4 + C, f, h, w) from motion frames (B, 3, M, H, W) in [-1, 1]."""
    video = conditioning_video(motion, num_frames, padding, anchor)
    latent = codec.encode(video)  # (B, C, f, h, w)
    given = mask_frames_for(mask, motion.shape[2])
    b, _, _, h, w = latent.shape
    m = build_mask(b, num_frames, h, w, given, codec.temporal_factor)
    return torch.cat([m.to(latent), latent], dim=1)


def build_y_from_latents(
    motion_latents: Tensor,
    num_latent_frames: int,
    temporal_factor: int,
    *,
    padding: str,
    mask: str,
    anchor_latent: Tensor | None = None,
) -> Tensor:
    """Latent hand-off ``y``: motion latents (B, C, m, h, w) + padding latents, no VAE trip.

    Anchor padding repeats ``anchor_latent`` (B, C, 1, h, w); zeros padding uses zero
    latents; "last" repeats the last motion latent. The mask marks latent frame 0
    ("first") or the pixel frames the motion latents stand for ("motion").
    """
    b, _, m, h, w = motion_latents.shape
    latent = _pad(motion_latents, num_latent_frames, padding, anchor_latent, "latent frames")
    num_frames = (num_latent_frames - 1) * temporal_factor + 1
    motion_pixels = 1 + (m - 1) * temporal_factor
    given = mask_frames_for(mask, motion_pixels)
    msk = build_mask(b, num_frames, h, w, given, temporal_factor)
    return torch.cat([msk.to(latent), latent], dim=1)


def build_y_anchor_first(
    anchor_latent: Tensor,
    motion_latents: Tensor | None,
    num_latent_frames: int,
    temporal_factor: int,
) -> Tensor:
    """SVI 2.0 Pro's ``y``: ``[anchor latent, motion latents, zero latents]`` with the mask
    on latent frame 0 only; the first clip (no motion latents) is ``[anchor, zeros]``.

    ``anchor_latent`` (B, C, 1, h, w) is the start image encoded alone; ``motion_latents``
    (B, C, m, h, w) are the previous clip's last denoised latents, as they are.
    """
    b, c, _, h, w = anchor_latent.shape
    parts = [anchor_latent[:, :, :1]]
    if motion_latents is not None:
        parts.append(motion_latents.to(anchor_latent.dtype))
    given = sum(p.shape[2] for p in parts)
    if given >= num_latent_frames:
        raise SviError(f"{given - 1} carried latent frames + the anchor do not fit a clip of "
                       f"{num_latent_frames} latent frames")  # fmt: skip
    parts.append(anchor_latent.new_zeros(b, c, num_latent_frames - given, h, w))
    latent = torch.cat(parts, dim=2)
    num_frames = (num_latent_frames - 1) * temporal_factor + 1
    msk = build_mask(b, num_frames, h, w, 1, temporal_factor)
    return torch.cat([msk.to(latent), latent], dim=1)
