"""Per-video-frame wav2vec2 features, as SVI-Talk computes them (the real-model path).

The released Talk code (utils/audio_process.py:18-41 and its ``Wav2Vec2Model``
subclass) runs chinese-wav2vec2-base on 16 kHz audio, linearly interpolates the
convolutional features (``align_corners=True``) to one per video frame BEFORE the
transformer encoder, and stacks the outputs of the encoder's layers:
(T, layers, width) = (T, 12, 768) for a base model. Here the same steps run on an
unmodified transformers ``Wav2Vec2Model``: a forward hook resizes the feature
encoder's output and hooks on the encoder layers collect their outputs. The layer
count and width are read from the model, never assumed.

Not done (yet): the released loudness normalisation to -23 LUFS (pyloudnorm) before
the encoder; pass audio normalised that way for features that match the released ones.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from svi.conditions.audio import SAMPLE_RATE, num_video_frames, resample, to_mono
from svi.errors import SviError

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

logger = logging.getLogger(__name__)

__all__ = ["Wav2Vec2Features"]


class Wav2Vec2Features:
    """wav -> (T, layers, width) float32 features at the video frame rate."""

    def __init__(
        self, model: Wav2Vec2Model, *, sample_rate: int = SAMPLE_RATE, normalize: bool = True
    ) -> None:
        self.model = model.eval()
        self.sample_rate = int(sample_rate)
        self.normalize = normalize  # zero mean, unit variance (Wav2Vec2FeatureExtractor)

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Wav2Vec2Features:
        """Load a local wav2vec2 folder (``config.json`` + weights, optionally the
        feature extractor's ``preprocessor_config.json``: sampling rate, normalisation)."""
        from transformers import Wav2Vec2Model

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise SviError(f"{folder} is not a wav2vec2 model folder (no config.json)")
        try:
            model = Wav2Vec2Model.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SviError(f"cannot load the wav2vec2 model in {folder}: {exc}") from None
        pre: dict[str, Any] = {}
        pre_file = folder / "preprocessor_config.json"
        if pre_file.is_file():
            try:
                pre = json.loads(pre_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise SviError(f"{pre_file} is not valid JSON: {exc}") from None
        model.to(device=device, dtype=dtype).requires_grad_(False)
        return cls(
            model,
            sample_rate=int(pre.get("sampling_rate", SAMPLE_RATE)),
            normalize=bool(pre.get("do_normalize", True)),
        )

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def feature_dim(self) -> int:
        """Features per video frame (``AudioModulesConfig.feature_dim``): layers x width."""
        return self.num_layers * self.width

    @torch.no_grad()
    def __call__(
        self,
        wav: np.ndarray | torch.Tensor,
        sample_rate: int,
        fps: float,
        num_frames: int | None = None,
    ) -> torch.Tensor:
        """(T, layers, width) features of ``wav`` ((N,) or (N, C) at ``sample_rate``).

        T is ``num_frames`` or :func:`~svi.conditions.audio.num_video_frames`.
        """
        audio = resample(to_mono(wav), int(sample_rate), self.sample_rate)
        if num_frames is None:
            num_frames = num_video_frames(int(audio.shape[0]), self.sample_rate, fps)
        if num_frames < 1:
            raise SviError(f"the audio spans no video frame ({audio.shape[0]} samples)")
        if self.normalize:
            audio = (audio - audio.mean()) / torch.sqrt(audio.var(correction=0) + 1e-7)
        param = next(self.model.parameters())
        layers: list[torch.Tensor] = []

        def to_frames(_m: Any, _a: Any, out: torch.Tensor) -> torch.Tensor:
            # (B, C, T_conv) -> (B, C, num_frames), as the released linear_interpolation
            return F.interpolate(out, size=num_frames, mode="linear", align_corners=True)

        def keep(_m: Any, _a: Any, out: Any) -> None:
            layers.append(out[0] if isinstance(out, tuple) else out)

        handles = [self.model.feature_extractor.register_forward_hook(to_frames)]
        handles += [layer.register_forward_hook(keep) for layer in self.model.encoder.layers]
        try:
            self.model(audio[None].to(param.device, param.dtype))
        except RuntimeError as exc:  # e.g. audio shorter than the conv stack's receptive field
            raise SviError(f"wav2vec2 cannot encode {audio.shape[0]} samples: {exc}") from None
        finally:
            for handle in handles:
                handle.remove()
        if len(layers) != self.num_layers:
            raise SviError(f"wav2vec2 ran {len(layers)} of its {self.num_layers} layers")
        return torch.stack(layers, dim=2)[0].float().cpu()  # (T, layers, width)
