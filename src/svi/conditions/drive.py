"""A driving stream (audio or pose) for the clip loop and for training.

A drive holds one condition stream for the whole video - per-frame audio features
(SVI-Talk) or pose frames (SVI-Dance) - and cuts it per clip with the continuous rule
of :mod:`svi.conditions.windows`: clip k of F frames, M carried, covers stream frames
``k (F - M) .. k (F - M) + F - 1``. The position of clip k is a function of k alone, so
a resumed generation reads exactly what an uninterrupted one reads.

Per clip, :meth:`AudioDrive.clip` / :meth:`PoseDrive.clip` give a :class:`ClipDrive`:
``applied(model, keep)`` conditions the DiT calls inside it on a batch whose rows with
``keep`` False get the null condition (zeros: the released null audio, a black pose
video) - the "dropped" branch of condition CFG and of condition dropout in training.

Length: the stream decides the video's length by default (:meth:`default_clips`: the
fewest clips that cover it); a longer request is refused (:meth:`check_clips`), with the
largest allowed count. The last clip may reach past the stream's end: the audio stream
is extended with silence, the pose stream holds its last frame.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from svi.conditions.adapters import model_condition
from svi.conditions.audio_modules import audio_condition
from svi.conditions.pose import pose_condition, pose_input
from svi.conditions.windows import (
    LatentAudio,
    clip_start_frame,
    frame_windows,
    latent_audio_windows,
)
from svi.errors import SviError
from svi.plan import clips_covering

log = logging.getLogger(__name__)

__all__ = ["AudioDrive", "ClipDrive", "Drive", "PoseDrive"]

CONDITIONS = ("audio", "pose")


@dataclass
class ClipDrive:
    """One clip's condition (batch 1): ``LatentAudio`` or a pose input tensor."""

    kind: Literal["audio", "pose"]
    value: LatentAudio | torch.Tensor
    guidance: float = 1.0  # condition CFG scale (audio); pose rides along in every branch
    _batches: dict = field(default_factory=dict, repr=False)

    def batch(self, keep: torch.Tensor) -> LatentAudio | torch.Tensor:
        """The condition for a batch; rows where ``keep`` (B,) is False get zeros. The same
        pattern gives the same object, so the modules encode a clip's condition once for
        all its sampler steps (their caches compare by identity)."""
        key = tuple(keep.tolist())
        if key not in self._batches:
            self._batches[key] = self._batch(keep)
        return self._batches[key]

    def _batch(self, keep: torch.Tensor) -> LatentAudio | torch.Tensor:
        mask = keep.to(torch.float32)
        if isinstance(self.value, LatentAudio):
            first, later = self.value
            return LatentAudio(
                first.expand(len(keep), *first.shape[1:]) * mask.view(-1, 1, 1, 1),
                later.expand(len(keep), *later.shape[1:]) * mask.view(-1, 1, 1, 1),
            )
        return self.value.expand(len(keep), *self.value.shape[1:]) * mask.view(-1, 1, 1, 1, 1)

    @contextmanager
    def applied(self, model: nn.Module, keep: torch.Tensor) -> Iterator[None]:
        """Condition ``model``'s calls inside the block on this clip (null where not kept)."""
        cond = self.batch(keep)
        if self.kind == "audio":
            with audio_condition(model, cond):  # type: ignore[arg-type]
                yield
        else:
            with pose_condition(model, cond):  # type: ignore[arg-type]
                yield


class Drive:
    """Common part of the two streams (length rules, fingerprint)."""

    kind: Literal["audio", "pose"]
    frames: int  # stream length in video frames
    guidance: float = 1.0

    def default_clips(self, num_frames: int, motion_frames: int) -> int:
        """The fewest clips (F frames, M carried) whose stitched video covers the stream."""
        return clips_covering(self.frames, num_frames, num_frames - motion_frames)

    def check_clips(self, clips: int, num_frames: int, motion_frames: int) -> None:
        """Refuse a length the stream cannot drive (``clips`` 0 = forever)."""
        most = self.default_clips(num_frames, motion_frames)
        if clips == 0 or clips > most:
            asked = "an endless video" if clips == 0 else f"{clips} clips"
            raise SviError(
                f"the {self.kind} stream has {self.frames} frames: it drives at most {most} "
                f"clip{'s' * (most != 1)} of {num_frames} frames ({motion_frames} carried), "
                f"not {asked}; leave the length out to follow the {self.kind}"
            )

    def describe(self) -> dict:
        """What a manifest records (resume refuses another stream)."""
        return {"kind": self.kind, "frames": self.frames, "guidance": self.guidance,
                "sha256": self.fingerprint()}  # fmt: skip

    def fingerprint(self) -> str:
        raise NotImplementedError


@dataclass(eq=False)
class AudioDrive(Drive):
    """Per-video-frame audio features (T, D) and how they become latent-frame windows."""

    features: torch.Tensor
    temporal_factor: int
    guidance: float = 1.0
    radius: int = 2
    kind: Literal["audio", "pose"] = "audio"

    def __post_init__(self) -> None:
        if self.features.ndim < 2 or self.features.shape[0] == 0:
            raise SviError(
                f"audio features must be (frames, ...), got {tuple(self.features.shape)}"
            )
        if not torch.isfinite(self.features).all():
            raise SviError("the audio features are not finite (NaN or inf)")
        _check_guidance(self.guidance, "audio")
        self.frames = int(self.features.shape[0])

    def clip(self, k: int, num_frames: int, motion_frames: int) -> ClipDrive:
        start = clip_start_frame(k, num_frames, motion_frames)
        windows = frame_windows(self._stream(start + num_frames), start, num_frames, self.radius)
        return ClipDrive("audio", latent_audio_windows(windows, self.temporal_factor),
                         self.guidance)  # fmt: skip

    def _stream(self, frames: int) -> torch.Tensor:
        """The stream extended with silence (the quietest feature row) to ``frames``."""
        missing = frames - self.frames
        if missing <= 0:
            return self.features
        silence = self.features.amin(dim=0, keepdim=True)
        return torch.cat([self.features, silence.expand(missing, *silence.shape[1:])])

    def fingerprint(self) -> str:
        data = self.features.detach().to(torch.float32).contiguous().numpy().tobytes()
        return hashlib.sha256(data).hexdigest()[:16]


@dataclass(eq=False)
class PoseDrive(Drive):
    """A pose video (T, H, W, 3) uint8 at the clip size."""

    video: np.ndarray
    temporal_factor: int
    guidance: float = 1.0
    kind: Literal["audio", "pose"] = "pose"

    def __post_init__(self) -> None:
        v = self.video
        if v.ndim != 4 or v.shape[-1] != 3 or v.shape[0] == 0 or v.dtype != np.uint8:
            raise SviError(f"a pose video must be (frames, H, W, 3) uint8, got {v.shape} {v.dtype}")
        _check_guidance(self.guidance, "pose")
        self.frames = int(v.shape[0])

    def clip(self, k: int, num_frames: int, motion_frames: int) -> ClipDrive:
        start = clip_start_frame(k, num_frames, motion_frames)
        index = np.minimum(np.arange(start, start + num_frames), self.frames - 1)
        return ClipDrive("pose", pose_input(self.video[index], self.temporal_factor),
                         self.guidance)  # fmt: skip

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.video).tobytes()).hexdigest()[:16]


def _check_guidance(value: float, kind: str) -> None:
    if not (isinstance(value, (int, float)) and np.isfinite(value) and 0 <= value <= 20):
        raise SviError(f"{kind} guidance must be a number in [0, 20], got {value!r}")


def check_model_drive(model: nn.Module, drive: Drive | None) -> None:
    """The model's condition modules and the drive must agree (one clear error)."""
    has = model_condition(model)
    if drive is None and has is not None:
        flag = "--audio" if has == "audio" else "--pose"
        raise SviError(f"the loaded adapter is an SVI-{'Talk' if has == 'audio' else 'Dance'} "
                       f"adapter ({has} condition): give {flag}")  # fmt: skip
    if drive is not None and has != drive.kind:
        what = "no conditional adapter" if has is None else f"an adapter for {has}"
        raise SviError(f"--{drive.kind} needs an adapter trained with the {drive.kind} "
                       f"condition; the model has {what}")  # fmt: skip


SILENT_PEAK = 1e-4  # a wav whose samples all stay below this (-80 dBFS) is silent


def read_audio_drive(
    path: Any, *, fps: float, temporal_factor: int, guidance: float = 1.0, encoder: Any = None
) -> AudioDrive:
    """The audio stream of a wav file: any rate and channel count (averaged, resampled);
    features from ``encoder`` (a :class:`~svi.conditions.wav2vec.Wav2Vec2Features`) or
    the weight-free log-mel features. A silent file drives a closed mouth (one warning);
    a file without samples is refused."""
    from svi.conditions.audio import audio_features, read_wav

    wav, rate = read_wav(path)
    if wav.size == 0:
        raise SviError(f"audio {path} holds no samples: nothing to drive the video")
    if float(np.abs(wav).max()) < SILENT_PEAK:  # ordinary input: a character who listens
        log.warning("note: audio %s is silent (every sample below -80 dBFS): the mouth "
                    "stays closed", path)  # fmt: skip
    features = encoder(wav, rate, fps) if encoder is not None else audio_features(wav, rate, fps)
    return AudioDrive(features, temporal_factor, guidance)


def read_pose_drive(path: Any, *, height: int, width: int, temporal_factor: int) -> PoseDrive:
    """The pose stream of a video file, one pose frame per generated frame, fitted to the
    clip size (centre crop to its aspect, Lanczos resize)."""
    from svi.crop import fit_frames
    from svi.video import read_video

    return PoseDrive(fit_frames(read_video(path), height, width), temporal_factor)
