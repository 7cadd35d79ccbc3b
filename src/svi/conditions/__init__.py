"""Conditions of SVI-Talk (audio) and SVI-Dance (pose) - see docs/conditions.md.

- :mod:`~svi.conditions.audio`: wav reading, mono, resampling, weight-free log-mel
  features at the video frame rate;
- :mod:`~svi.conditions.wav2vec`: the real path's wav2vec2 features;
- :mod:`~svi.conditions.windows`: per-frame windows, clips on the stream, latent grouping;
- :mod:`~svi.conditions.audio_modules`: audio projection + per-block audio attention;
- :mod:`~svi.conditions.pose`: the pose encoder added to the patch tokens;
- :mod:`~svi.conditions.drive`: a stream cut per clip for generation and training;
- :mod:`~svi.conditions.adapters`: a LoRA and its condition modules in one file.
"""

from __future__ import annotations

from svi.conditions.audio import audio_features, num_video_frames, read_wav, resample, to_mono
from svi.conditions.audio_modules import (
    MULTITALK_AUDIO,
    WORLD_AUDIO,
    AudioCrossAttention,
    AudioModulesConfig,
    AudioProjection,
    attach_audio_modules,
    audio_condition,
    detach_audio_modules,
    has_audio_modules,
)
from svi.conditions.pose import (
    WAN_POSE_ENCODER,
    PoseEncoder,
    PoseEncoderConfig,
    attach_pose_encoder,
    detach_pose_encoder,
    has_pose_encoder,
    pose_condition,
    pose_encoder_config,
    pose_input,
)
from svi.conditions.wav2vec import Wav2Vec2Features
from svi.conditions.windows import (
    LatentAudio,
    clip_start_frame,
    clip_windows,
    frame_windows,
    latent_audio_windows,
    released_talk_start_frame,
)

__all__ = [
    "MULTITALK_AUDIO",
    "WAN_POSE_ENCODER",
    "WORLD_AUDIO",
    "AudioCrossAttention",
    "AudioModulesConfig",
    "AudioProjection",
    "LatentAudio",
    "PoseEncoder",
    "PoseEncoderConfig",
    "Wav2Vec2Features",
    "attach_audio_modules",
    "attach_pose_encoder",
    "audio_condition",
    "audio_features",
    "clip_start_frame",
    "clip_windows",
    "detach_audio_modules",
    "detach_pose_encoder",
    "frame_windows",
    "has_audio_modules",
    "has_pose_encoder",
    "latent_audio_windows",
    "num_video_frames",
    "pose_condition",
    "pose_encoder_config",
    "pose_input",
    "read_wav",
    "released_talk_start_frame",
    "resample",
    "to_mono",
]
