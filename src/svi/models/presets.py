"""Named model presets, one table (as DiT's model-size table).

A preset fixes everything a clip needs besides weights: the DiT config (world
models) or the folder layout (real Wan), codec, text encoder, clip geometry,
conditioning layout and sampler defaults. Variants are rows here, never copied
scripts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from svi.errors import SviError

MaskMode = Literal["first", "motion"]
Padding = Literal["anchor", "zeros", "last"]
Prediction = Literal["velocity", "x0-residual"]
PREDICTIONS = ("velocity", "x0-residual")

# Fields that older versions wrote into svi_model.json and nothing reads (the LoRA rank
# and alpha of a training run live in TrainConfig); stored presets may still carry them.
_RETIRED_FIELDS = frozenset({"lora_rank", "lora_alpha"})


@dataclass(frozen=True)
class ModelPreset:
    name: str
    family: Literal["world", "wan"]
    description: str
    codec: Literal["pixel", "wan-vae"]
    text_encoder: Literal["minilm", "umt5"]
    text_len: int
    height: int
    width: int
    num_frames: int  # pixel frames per clip (F)
    fps: int
    motion_frames: int  # M for a single prompt
    stream_motion_frames: int  # M for a prompt stream
    mask: MaskMode  # "first": latent frame 0 only (SVI); "motion": every motion frame
    padding: Padding
    shift: float
    steps: int
    cfg: float
    negative_prompt: str = ""
    transformer: dict[str, Any] = field(default_factory=dict)  # world DiT config
    wan_variant: str | None = None  # real Wan: layout expected in the folder
    # what the DiT's output means: "velocity" (Wan, flow matching) or, world models only,
    # "x0-residual": the clean clip minus y's conditioning video (0 = copy the given
    # frames into the padding); the sampler and training get the velocity it implies
    prediction: Prediction = "velocity"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelPreset:
        """The preset :meth:`to_dict` stored (retired fields of older files are ignored).

        Raises TypeError for anything else (not a dict, unknown or missing fields).
        """
        if not isinstance(data, dict):
            raise TypeError(f"a preset is a JSON object, got {type(data).__name__}")
        return cls(**{k: v for k, v in data.items() if k not in _RETIRED_FIELDS})


# Tiny DiT of the same class as Wan (diffusers WanTransformer3DModel), pixel "latents":
# 32x32 RGB, patch (1, 4, 4) -> 64 tokens per frame, 384-d MiniLM text states.
_WORLD_TINY_DIT = {
    "patch_size": (1, 4, 4),
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "in_channels": 3 * 2 + 4,
    "out_channels": 3,
    "text_dim": 384,
    "freq_dim": 64,
    "ffn_dim": 512,
    "num_layers": 4,
    "image_dim": None,
    "rope_max_seq_len": 64,
}

_WAN_NEGATIVE = (
    "static, blurry, low quality, worst quality, jpeg artifacts, deformed, disfigured, "
    "extra fingers, bad hands, bad anatomy, subtitles, watermark, still picture"
)

_WAN_COMMON = dict(
    family="wan",
    codec="wan-vae",
    text_encoder="umt5",
    text_len=512,
    num_frames=81,
    fps=16,
    motion_frames=1,
    stream_motion_frames=5,
    mask="first",
    padding="anchor",
    shift=5.0,
    steps=50,
    cfg=5.0,
    negative_prompt=_WAN_NEGATIVE,
)

PRESETS: dict[str, ModelPreset] = {
    "world-tiny": ModelPreset(
        name="world-tiny",
        family="world",
        description="embedded 1.3 M-param Wan DiT trained on the procedural world (32x32, CPU)",
        codec="pixel",
        text_encoder="minilm",
        text_len=48,
        height=32,
        width=32,
        num_frames=5,
        fps=8,
        motion_frames=2,
        stream_motion_frames=2,
        mask="motion",
        padding="last",
        shift=20.0,  # sampler; chosen on validation scenes (docs/world-model.md); trained at 3
        steps=20,
        cfg=1.0,
        negative_prompt="",
        transformer=_WORLD_TINY_DIT,
    ),
    "wan2.1-i2v-14b-480p": ModelPreset(
        name="wan2.1-i2v-14b-480p",
        description="Wan 2.1 I2V 14B at 480x832 (SVI 1.0 base), diffusers folder",
        height=480,
        width=832,
        wan_variant="wan2.1-i2v-14b-480p",
        **_WAN_COMMON,
    ),
    "wan2.1-i2v-14b-720p": ModelPreset(
        name="wan2.1-i2v-14b-720p",
        description="Wan 2.1 I2V 14B at 720x1280, diffusers folder",
        height=720,
        width=1280,
        wan_variant="wan2.1-i2v-14b-720p",
        **_WAN_COMMON,
    ),
    "wan2.2-i2v-a14b": ModelPreset(
        name="wan2.2-i2v-a14b",
        description="Wan 2.2 I2V A14B: high- and low-noise experts switched at a boundary",
        height=480,
        width=832,
        wan_variant="wan2.2-i2v-a14b",
        **_WAN_COMMON,
    ),
    "wan2.2-ti2v-5b": ModelPreset(
        name="wan2.2-ti2v-5b",
        description="Wan 2.2 TI2V 5B at 704x1280 (VAE 16x spatial, 48 latent channels)",
        height=704,
        width=1280,
        wan_variant="wan2.2-ti2v-5b",
        **{**_WAN_COMMON, "num_frames": 121, "fps": 24},
    ),
}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; a clear error lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise SviError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
