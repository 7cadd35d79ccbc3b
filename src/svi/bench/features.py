"""A learned world-feature consistency score (a VBench "subject consistency" analogue).

A small frozen CNN, trained by this project on the procedural world's free labels
(object colours and shapes, background family and colours, lighting; see
:mod:`svi.bench.feature_training`), embeds 32x32 RGB frames. No downloaded weights:
the shipped encoder lives in ``svi/assets/world-features/`` as ``encoder.safetensors``
(trunk only) + ``encoder.json`` (config, version, training command, figures, sha256).

:func:`feature_consistency` is the mean cosine similarity of each frame's embedding to
the mean embedding of reference frames. It rewards a frozen video as much as a good
one, so always report it next to a motion metric.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from svi.errors import SviError
from svi.fingerprint import sha256_file

FEATURE_VERSION = "world-features-1"
INPUT_SIZE = 32  # frames of any size are area-resized to this before the trunk
WEIGHTS_FILE = "encoder.safetensors"
INFO_FILE = "encoder.json"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "assets" / "world-features"


@dataclass(frozen=True)
class EncoderConfig:
    """Trunk shape: one stage per entry of ``channels`` (conv, conv stride 2), then
    global average + max pooling and a linear projection to ``embed_dim``."""

    channels: tuple[int, ...] = (24, 48, 96)
    embed_dim: int = 96
    input_size: int = INPUT_SIZE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SviError(f"unknown feature-encoder config keys: {', '.join(unknown)}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(int(c) for c in values["channels"])
        return cls(**values)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FeatureTrunk(nn.Module):
    """(B, 3, 32, 32) in [0, 1] -> (B, D) standardised features (before L2 norm)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        widths = (3, *config.channels)
        self.stages = nn.Sequential(*[_stage(a, b) for a, b in itertools.pairwise(widths)])
        self.project = nn.Linear(2 * config.channels[-1], config.embed_dim)
        # Centres and scales each dimension with training statistics, so that cosine
        # similarities spread over [-1, 1] instead of sharing one large mean direction.
        self.standardise = nn.BatchNorm1d(config.embed_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(x)  # (B, C, 4, 4)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.standardise(self.project(pooled))  # (B, D)


def frames_to_tensor(frames: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, size, size) float32 in [0, 1] (area-resized)."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise SviError("frames must be a uint8 numpy array (T, H, W, 3)")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise SviError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (size, size) and len(x):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


class FeatureEncoder:
    """The frozen trunk plus what ``encoder.json`` says about it (``info``)."""

    def __init__(self, trunk: FeatureTrunk, config: EncoderConfig, info: dict[str, Any]):
        self.trunk = trunk.eval().requires_grad_(False)
        self.config = config
        self.info = info

    @property
    def dim(self) -> int:
        return self.config.embed_dim

    @property
    def version(self) -> str:
        return str(self.info.get("version", FEATURE_VERSION))

    def embed(self, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (T, D) float32 unit vectors; no grad, CPU, deterministic."""
        x = frames_to_tensor(frames, self.config.input_size)
        out = np.zeros((len(x), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                z = self.trunk(x[start : start + batch_size])
                out[start : start + len(z)] = F.normalize(z, dim=1).numpy()
        return out


def frame_consistency(
    frames: np.ndarray, reference: np.ndarray, encoder: FeatureEncoder | None = None
) -> np.ndarray:
    """(T,) cosine similarity of each frame's embedding to the mean reference embedding."""
    encoder = encoder or default_encoder()
    ref = encoder.embed(reference)
    if len(ref) == 0:
        raise SviError("feature consistency needs at least one reference frame")
    centre = ref.mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    return encoder.embed(frames) @ centre


def feature_consistency(
    frames: np.ndarray, reference: np.ndarray, encoder: FeatureEncoder | None = None
) -> float:
    """Mean of :func:`frame_consistency`: 1.0 when every frame matches the reference."""
    if len(frames) == 0:
        raise SviError("feature consistency needs at least one frame")
    return float(frame_consistency(frames, reference, encoder).mean())


# ---- files -----------------------------------------------------------------------


def save_feature_encoder(
    trunk: FeatureTrunk, config: EncoderConfig, out_dir: str | Path, info: dict[str, Any]
) -> Path:
    """Write ``encoder.safetensors`` (+ config in its metadata) and ``encoder.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    config_text = json.dumps(config.to_dict(), sort_keys=True)
    state = {k: v.detach().contiguous().cpu() for k, v in trunk.state_dict().items()}
    save_file(state, weights, metadata={"config": config_text, "version": FEATURE_VERSION})
    weights.chmod(0o644)
    record = {
        "version": FEATURE_VERSION,
        "config": config.to_dict(),
        "sha256": sha256_file(weights),
        "weights_bytes": weights.stat().st_size,
        **info,
    }
    (out / INFO_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SviError(f"cannot read feature-encoder info {path}: {exc}") from exc
    for key in ("version", "config", "sha256"):
        if key not in info:
            raise SviError(f"feature-encoder info {path} lacks {key!r}")
    return info


def load_feature_encoder(path: str | Path | None = None) -> FeatureEncoder:
    """The encoder in folder ``path`` (default: the shipped ``assets/world-features``).

    Refuses, with one :class:`SviError`, a missing file, a weights file whose sha256
    differs from ``encoder.json``, a config that differs between the two files or does
    not fit the tensors, and a different :data:`FEATURE_VERSION`.
    """
    folder = Path(path) if path is not None else DEFAULT_DIR
    weights, info_path = folder / WEIGHTS_FILE, folder / INFO_FILE
    for file in (weights, info_path):
        if not file.is_file():
            raise SviError(f"feature encoder file not found: {file}")
    info = _read_info(info_path)
    if info["version"] != FEATURE_VERSION:
        raise SviError(
            f"feature encoder {folder} is version {info['version']!r}; "
            f"this svi reads {FEATURE_VERSION!r}"
        )
    digest = sha256_file(weights)
    if digest != info["sha256"]:
        raise SviError(
            f"feature encoder {weights} does not match its {INFO_FILE}: sha256 {digest[:12]}..."
            f" != {str(info['sha256'])[:12]}... (file changed or corrupted)"
        )
    try:
        config = EncoderConfig.from_dict(info["config"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise SviError(f"bad feature-encoder config in {info_path}: {exc}") from exc
    try:
        with safe_open(weights, framework="pt") as handle:
            stored = json.loads((handle.metadata() or {}).get("config", "null"))
        state = load_file(weights)
    except (OSError, ValueError, SafetensorError) as exc:
        raise SviError(f"cannot read feature encoder {weights}: {exc}") from exc
    if stored != config.to_dict():
        raise SviError(f"feature encoder config in {info_path} differs from {weights}")
    trunk = FeatureTrunk(config)
    try:
        trunk.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SviError(f"feature encoder {weights} does not fit its config: {exc}") from exc
    return FeatureEncoder(trunk, config, info)


@functools.lru_cache(maxsize=1)
def default_encoder() -> FeatureEncoder:
    """The shipped encoder, loaded once per process."""
    return load_feature_encoder()
