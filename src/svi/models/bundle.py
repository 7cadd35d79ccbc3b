"""Everything a clip needs, loaded through one code path: DiT(s), codec, text encoder.

``load_bundle`` accepts a preset name (the embedded world model, found without any
flag), a world checkpoint directory written by ``svi train`` (``svi_model.json`` +
``transformer/``) or a real Wan diffusers folder (with ``--preset``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import WanTransformer3DModel

from svi.errors import SviError
from svi.models.codec import Codec, PixelCodec
from svi.models.presets import ModelPreset, get_preset
from svi.sampling import Experts

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MODEL_FILE = "svi_model.json"
DEFAULT_LORA = "svi_lora.safetensors"  # ERFT LoRA shipped next to an embedded model


@dataclass
class ModelBundle:
    preset: ModelPreset
    transformer: torch.nn.Module
    codec: Codec
    text_encoder: Any  # svi.models.text.TextEncoder
    source: str
    transformer_2: torch.nn.Module | None = None
    boundary: float | None = None
    info: dict[str, Any] | None = None
    # frames (B, 3, H, W) in [-1, 1] (, preprocessing) -> CLIP tokens (Wan 2.1 I2V)
    image_encoder: Any = None
    image_model: torch.nn.Module | None = None  # the CLIP module behind it (memory modes)

    @property
    def default_lora(self) -> Path | None:
        """The SVI LoRA shipped with an embedded world model, if any."""
        path = Path(self.source) / DEFAULT_LORA
        return path if self.preset.family == "world" and path.is_file() else None

    def bundled_lora(self, name: str) -> Path | None:
        """A LoRA shipped beside an embedded world model, by short name: ``"svi"`` is the
        default, ``"clean"`` its clean-data baseline; ``"talk"`` / ``"dance"`` the SVI-Talk
        / SVI-Dance adapters and ``"talk_clean"`` / ``"dance_clean"`` theirs
        (``NAME_lora.safetensors``)."""
        return shipped_lora(Path(self.source), name) if self.preset.family == "world" else None

    @property
    def experts(self) -> Experts:
        return Experts(self.transformer, self.transformer_2, self.boundary,
                       prediction=self.preset.prediction)  # fmt: skip

    def experts_for(self, first_frame: torch.Tensor, clip_preprocess: str = "official") -> Experts:
        """The DiT call for one clip; with a CLIP path, image tokens of ``first_frame``
        (1, 3, H, W) - the clip's first motion frame, as SVI feeds Wan 2.1 - prepared for
        CLIP by ``clip_preprocess`` (:mod:`svi.models.clip`)."""
        if self.image_encoder is None:
            return self.experts
        with torch.no_grad():
            states = self.image_encoder(first_frame, clip_preprocess)
        return Experts(self.transformer, self.transformer_2, self.boundary, states,
                       prediction=self.preset.prediction)  # fmt: skip

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C, f, h, w) of one clip's latents."""
        p, c = self.preset, self.codec
        return (
            c.latent_channels,
            c.latent_frames(p.num_frames),
            p.height // c.spatial_factor,
            p.width // c.spatial_factor,
        )


def embedded_dir(name: str) -> Path:
    """Where the shipped checkpoint of world preset ``name`` lives."""
    return ASSETS / name


def build_world_transformer(preset: ModelPreset, seed: int = 0) -> WanTransformer3DModel:
    """A randomly initialised world DiT of ``preset`` (seeded, for base training)."""
    if preset.family != "world":
        raise SviError(f"preset {preset.name} is a real Wan model; load it from its folder")
    torch.manual_seed(seed)
    return WanTransformer3DModel(**preset.transformer)


def world_text_encoder(preset: ModelPreset) -> Any:
    from svi.models.text import MiniLMTextEncoder

    return MiniLMTextEncoder(max_length=preset.text_len)


def save_world_model(
    out: Path, transformer: WanTransformer3DModel, preset: ModelPreset, info: dict
) -> Path:
    """Write a loadable world checkpoint: ``transformer/`` + ``svi_model.json``."""
    out.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(out / "transformer", safe_serialization=True)
    meta = {"preset": preset.to_dict(), **info}
    (out / MODEL_FILE).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
    return out


def _load_world_dir(path: Path, preset_name: str | None) -> ModelBundle:
    try:
        meta = json.loads((path / MODEL_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SviError(f"{path / MODEL_FILE} is not valid JSON: {exc}") from None
    try:
        preset = ModelPreset.from_dict(meta["preset"])
    except (KeyError, TypeError) as exc:
        raise SviError(f"{path / MODEL_FILE} does not describe a preset: {exc}") from None
    if preset_name is not None and preset_name != preset.name:
        raise SviError(f"{path} holds a {preset.name} model, not {preset_name}")
    if not (path / "transformer" / "config.json").exists():
        raise SviError(f"model folder {path} is missing transformer/config.json")
    try:
        transformer = WanTransformer3DModel.from_pretrained(
            path / "transformer", use_safetensors=True, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise SviError(f"cannot load the transformer in {path}: {exc}") from None
    transformer.eval().requires_grad_(False)
    return ModelBundle(
        preset=preset,
        transformer=transformer,
        codec=PixelCodec(),
        text_encoder=world_text_encoder(preset),
        source=str(path),
        info=meta,
    )


def shipped_lora(folder: Path, name: str) -> Path | None:
    """The adapter ``folder`` ships under ``name``: a short name (``"talk"`` ->
    ``talk_lora.safetensors``) or that file's name; never a path outside ``folder``."""
    stem = name.removesuffix("_lora.safetensors")
    if not stem.replace("_", "").isalnum():
        return None
    path = folder / f"{stem}_lora.safetensors"
    return path if path.is_file() else None


def model_dir(model: str | Path | None = None, preset: str | None = None) -> Path:
    """The folder ``load_bundle`` would load, resolved without loading any weights."""
    return _resolve(model, preset)[0]


def load_bundle(
    model: str | Path | None = None,
    preset: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """Load a model by preset name, world checkpoint dir or Wan folder (see module doc).

    ``device`` / ``dtype``: where and how a Wan folder's weights load (default: the GPU
    when there is one, bf16 there); a world model always loads on the CPU in float32.
    """
    path, embedded = _resolve(model, preset)
    if (path / MODEL_FILE).exists():  # --preset, where given, must name the folder's
        return _load_world_dir(path, embedded or preset)
    return _load_wan_dir(path, preset, device=device, dtype=dtype)


def _resolve(model: str | Path | None, preset: str | None) -> tuple[Path, str | None]:
    """(the model's folder, the embedded preset's name where ``model`` names one)."""
    if preset is not None:
        get_preset(preset)  # an unknown name is an error, never ignored
    if model is None:
        model = preset or "world-tiny"
    path = Path(model)
    if str(model) in _preset_names() and not path.exists():
        p = get_preset(str(model))
        if p.family == "wan":
            raise SviError(
                f"{p.name} needs its weights: pass the diffusers folder with --model DIR "
                f"--preset {p.name}"
            )
        path = embedded_dir(p.name)
        if not (path / MODEL_FILE).exists():
            raise SviError(f"the embedded {p.name} checkpoint is missing from {path}")
        return path, p.name
    if not path.exists():
        raise SviError(f"model {model} is neither a preset nor an existing folder")
    if not (path / MODEL_FILE).exists() and not (path / "model_index.json").exists():
        raise SviError(f"{path} holds neither {MODEL_FILE} (svi world model) nor model_index.json")
    return path, None


def _load_wan_dir(path: Path, preset_name: str | None, **where) -> ModelBundle:
    from svi.models.wan import detect_wan_variant, load_wan_folder

    variant = preset_name or detect_wan_variant(path)
    preset = get_preset(variant)
    comps = load_wan_folder(path, expect=preset.wan_variant, **where)
    if comps.conditioning != "concat":
        raise SviError(
            f"{path} is {variant}, which conditions by replacing the first latent frame; "
            "svi's clip loop supports the 36-channel concat models (Wan 2.1 I2V, 2.2 I2V A14B)"
        )
    return ModelBundle(
        preset=preset,
        transformer=comps.transformer,
        codec=comps.vae,
        text_encoder=comps.text_encoder,
        source=str(path),
        transformer_2=comps.transformer_2,
        boundary=comps.boundary_ratio,
        image_encoder=comps.encode_image if comps.image_encoder is not None else None,
        image_model=comps.image_encoder,
    )


def _preset_names() -> set[str]:
    from svi.models.presets import PRESETS

    return set(PRESETS)
