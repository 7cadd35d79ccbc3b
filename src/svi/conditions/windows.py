"""Which audio frames each video frame and each latent frame sees.

One stream of per-video-frame features (T, *D) feeds every clip. The rules:

- **Clip k on the stream.** Clip k of F frames, M of them carried from clip k-1,
  covers stream frames ``k * (F - M) .. k * (F - M) + F - 1`` (:func:`clip_start_frame`).
  Its first M frames are the previous clip's last M, so consecutive clips read one
  continuous stream: frame i of clip k and frame i + F - M of clip k-1 are the same
  stream frame. (The released Talk script reads clip k from ``81 k - M`` instead,
  which drifts by M frames per clip from clip 2 on: :func:`released_talk_start_frame`.)
- **Window of a video frame.** Frame i of a clip starting at stream frame s sees the
  stream frames ``s + i - r .. s + i + r`` (r = 2: 5 frames), each index clamped to
  ``[0, T - 1]``, so the first and last stream frames repeat at the edges, as released
  (:func:`frame_windows`).
- **Latent frames.** With a codec of temporal factor tf, latent frame 0 is video frame
  0 and latent frame j > 0 is video frames ``1 + (j-1) tf .. j tf``. Latent frame 0
  gets its frame's window (2r + 1 rows); latent frame j > 0 gets the contiguous rows
  "first frame's window up to its centre, the centres of the middle frames, the last
  frame's window from its centre": ``(r + 1) + (tf - 2) + (r + 1) = 2r + tf`` rows
  (8 for Wan's tf = 4, the released ``3 + 1 + 1 + 3``). For tf = 1 (the world model)
  that is just the frame's own window (:func:`latent_audio_windows`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from svi.errors import SviError

__all__ = [
    "LatentAudio",
    "clip_start_frame",
    "clip_windows",
    "frame_windows",
    "latent_audio_windows",
    "released_talk_start_frame",
]


def _check_clip(clip: int, num_frames: int, motion_frames: int) -> None:
    if clip < 0 or num_frames < 1 or not 0 <= motion_frames < num_frames:
        raise SviError(
            f"need clip >= 0 and 0 <= motion frames < clip frames, got clip {clip}, "
            f"{num_frames} frames, {motion_frames} carried"
        )


def clip_start_frame(clip: int, num_frames: int, motion_frames: int) -> int:
    """The stream frame where clip ``clip`` starts: ``clip * (F - M)``."""
    _check_clip(clip, num_frames, motion_frames)
    return clip * (num_frames - motion_frames)


def released_talk_start_frame(clip: int, num_frames: int, motion_frames: int) -> int:
    """Where the released Talk script starts clip k's audio: ``F k - M`` for k > 0.

    test_svi_talk.py:277-280 (docs/variants-sources.md section 3); it keeps every clip
    whole in the output, so its audio and video agree only for clips 0 and 1.
    """
    _check_clip(clip, num_frames, motion_frames)
    return 0 if clip == 0 else clip * num_frames - motion_frames


def frame_windows(
    features: torch.Tensor, start_frame: int, num_frames: int, radius: int = 2
) -> torch.Tensor:
    """(num_frames, 2 radius + 1, *D) windows of the stream ``features`` (T, *D).

    Row i, column j is stream frame ``clamp(start_frame + i + j - radius, 0, T - 1)``.
    """
    if features.ndim < 1 or features.shape[0] == 0:
        raise SviError("the audio feature stream is empty")
    if num_frames < 0 or radius < 0 or start_frame < 0:
        raise SviError(
            f"need start_frame, num_frames, radius >= 0, got {start_frame}, {num_frames}, {radius}"
        )
    centres = start_frame + torch.arange(num_frames)[:, None]
    index = (centres + torch.arange(-radius, radius + 1)[None, :]).clamp(0, features.shape[0] - 1)
    return features[index]


def clip_windows(
    features: torch.Tensor, clip: int, num_frames: int, motion_frames: int, radius: int = 2
) -> torch.Tensor:
    """:func:`frame_windows` of clip ``clip`` (F frames, M carried) on the stream."""
    start = clip_start_frame(clip, num_frames, motion_frames)
    return frame_windows(features, start, num_frames, radius)


class LatentAudio(NamedTuple):
    """Audio windows grouped per latent frame, the input of ``AudioProjection``."""

    first: torch.Tensor  # (B, 1, W, *D): latent frame 0
    later: torch.Tensor  # (B, n - 1, W + tf - 1, *D): latent frames 1 .. n - 1

    @property
    def latent_frames(self) -> int:
        return int(self.first.shape[1] + self.later.shape[1])

    def zeros_like(self) -> LatentAudio:
        """The "no audio" input of audio CFG (the released null audio is zeros)."""
        return LatentAudio(torch.zeros_like(self.first), torch.zeros_like(self.later))

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LatentAudio:
        return LatentAudio(
            self.first.to(device=device, dtype=dtype), self.later.to(device=device, dtype=dtype)
        )


def latent_audio_windows(windows: torch.Tensor, temporal_factor: int) -> LatentAudio:
    """Group one clip's windows (F, W, *D) per latent frame (module docstring), batch 1.

    F must be ``1 + temporal_factor * (n - 1)``. Batches: ``torch.cat`` the fields.
    """
    if temporal_factor < 1:
        raise SviError(f"temporal factor must be >= 1, got {temporal_factor}")
    if windows.ndim < 2 or windows.shape[1] % 2 == 0:
        raise SviError(f"windows must be (frames, 2r + 1, ...), got {tuple(windows.shape)}")
    frames, width = int(windows.shape[0]), int(windows.shape[1])
    if frames < 1 or (frames - 1) % temporal_factor:
        raise SviError(
            f"{frames} video frames do not form whole latent frames of temporal factor "
            f"{temporal_factor} (need 1 + {temporal_factor} k)"
        )
    n_later = (frames - 1) // temporal_factor
    rest = windows[1:]
    if temporal_factor == 1:
        later = rest
    else:
        mid = width // 2
        groups = rest.reshape(n_later, temporal_factor, *windows.shape[1:])
        later = torch.cat(
            [groups[:, 0, : mid + 1], groups[:, 1:-1, mid], groups[:, -1, mid:]], dim=1
        )  # (n - 1, W + tf - 1, *D)
    return LatentAudio(windows[:1][None], later[None])
