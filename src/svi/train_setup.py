"""What a training run resolves and checks before anything is written or loaded.

:func:`resolve_config` fills every model-dependent default of a :class:`TrainConfig`
(preset detected from the model folder, clip geometry, the data's conditioning format)
and checks it against the model - Wan clip sizes, experts, the 2.0 Pro layout, the
replay memory's bounds - reading only small JSON files; :func:`check_dataset` checks a
dataset folder's CSVs. ``svi train`` runs both before it touches ``--out``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from svi.config import ErftConfig, TrainConfig
from svi.errors import SviError
from svi.models.presets import ModelPreset, get_preset

# Latent geometry per codec: (channels, spatial factor, temporal factor). Wan clips are
# also cut into 2x2 patches, so their sides are multiples of 16 and F = 4k + 1.
_CODEC_GEOMETRY = {"pixel": (3, 1, 1), "wan-vae": (16, 8, 4)}
WAN_MULTIPLE = 16
BANK_ENTRY_BYTES = 2  # bf16, the banks' storage dtype (svi.erft.make_banks)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` with every model-dependent default made explicit and checked against the
    model, before any weight loads (reads only small JSON files of ``init``).

    Fills in the preset (``init``'s, detected from its folder), the clip geometry and the
    data's conditioning format (the preset's); checks Wan geometry (sides multiples of
    16, F = 4k + 1), that a world model keeps its clip size, that the motion frames fit
    the clip and that the replay memory's ``spatial_pool`` / ``max_bytes`` fit one error.
    Idempotent; raises :class:`SviError` with one clear sentence.
    """
    from svi.models.presets import PRESETS

    init, name = config.init, config.preset
    if init not in (None, "embedded") and init in PRESETS and not Path(init).exists():
        if PRESETS[init].family == "wan":
            raise SviError(f"{init} needs its weights: pass the diffusers folder as --model")
        if name not in (None, init):
            raise SviError(f"--model {init} is not a {name} model")
        init, name = "embedded", init
    if init in (None, "embedded"):  # a random or the embedded world model
        preset = get_preset(name or "world-tiny")
        if preset.family != "world":
            raise SviError(f"{preset.name} needs its weights: give its diffusers folder as --model")
    else:
        detected = _model_preset(Path(init))
        preset = get_preset(name or detected)
        family = get_preset(detected).family
        if family != preset.family or (family == "world" and detected != preset.name):
            raise SviError(f"--model {init} holds a {detected} model, not {preset.name} (--preset)")
        if preset.family == "wan":
            _check_wan_folder(Path(init), preset.name)
    h, w, f = _clip_geometry(config, preset)
    d = config.data
    m = d.motion_frames or preset.motion_frames
    if m >= f:
        raise SviError(f"data.motion_frames {m} leaves nothing to generate in clips of {f} frames")
    if d.source == "world" and (h != w or d.episode_frames < f + 1):
        raise SviError(f"the procedural world renders square clips from episodes longer than "
                       f"the clip; got {h}x{w} clips of {f} frames from episodes of "
                       f"{d.episode_frames} (data.episode_frames)")  # fmt: skip
    if config.dit is not None:
        _check_dit(config, preset)
    if config.prediction is not None and (config.init is not None or preset.family != "world"):
        raise SviError("prediction (what the DiT outputs) is chosen when a world model is "
                       "trained from scratch; a fine-tune keeps its model's")  # fmt: skip
    if config.erft is not None:
        _check_replay_memory(config.erft, preset.codec, h, w, f)
    _check_expert(config, preset)
    _check_condition(config)
    data = replace(d, motion_frames=m, padding=d.padding or preset.padding,
                   mask=d.mask or preset.mask)  # fmt: skip
    if "anchor-first" in (data.padding, *data.padding_mix):
        _check_anchor_first(preset.codec, m, f)
    if "anchor-first" in data.padding_mix and (config.erft or config.augment):
        raise SviError("data.padding_mix with 'anchor-first' is for base training: ERFT and "
                       "[augment] degrade y in one layout (data.padding)")  # fmt: skip
    return replace(config, preset=preset.name, init=init, height=h, width=w, num_frames=f,
                   data=data)  # fmt: skip


def world_preset(config: TrainConfig) -> ModelPreset:
    """The preset of a resolved run with its ``dit`` sizes over the preset's DiT config,
    its ``prediction`` and - trained from scratch - its clip length and carried frames
    (what base training builds, exports and checkpoints)."""
    preset = get_preset(config.preset or "world-tiny")
    if config.prediction is not None:
        preset = replace(preset, prediction=config.prediction)
    if config.init is None and config.num_frames not in (None, preset.num_frames):
        m = config.data.motion_frames or preset.motion_frames  # the clip it was trained on
        preset = replace(preset, num_frames=config.num_frames, motion_frames=m,
                         stream_motion_frames=m)  # fmt: skip
    if not config.dit:
        return preset
    dit = {k: tuple(v) if k == "patch_size" else v for k, v in config.dit.items()}
    return replace(preset, transformer={**preset.transformer, **dit})


def _check_dit(config: TrainConfig, preset: ModelPreset) -> None:
    """``dit`` sizes only for a world model trained from scratch, patches tiling the clip."""
    if config.init is not None or preset.family != "world":
        raise SviError("dit (the DiT's sizes) applies to a world model trained from scratch; "
                       "a fine-tune keeps its model's sizes")  # fmt: skip
    pt, ph, pw = world_preset(config).transformer["patch_size"]
    if preset.height % ph or preset.width % pw or pt != 1:
        raise SviError(f"dit.patch_size {[pt, ph, pw]} must be [1, h, w] with h and w dividing "
                       f"the {preset.height}x{preset.width} frame")  # fmt: skip


def _model_preset(path: Path) -> str:
    """The preset of the model in folder ``path`` (a world model dir or a Wan folder)."""
    from svi.models.bundle import MODEL_FILE

    if (path / MODEL_FILE).is_file():
        try:
            meta = json.loads((path / MODEL_FILE).read_text(encoding="utf-8"))
            return str(meta["preset"]["name"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SviError(f"{path / MODEL_FILE} does not describe a preset ({exc})") from None
    if (path / "model_index.json").is_file():
        from svi.models.wan import detect_wan_variant

        return detect_wan_variant(path)
    if not path.exists():
        raise SviError(f"model {path} is neither a preset nor an existing folder")
    raise SviError(f"{path} holds neither {MODEL_FILE} (svi world model) nor model_index.json")


def _check_wan_folder(folder: Path, variant: str) -> None:
    """The folder holds ``variant``'s files and a DiT conditioned by concatenation."""
    from svi.models.wan import WAN_LAYOUTS, validate_wan_folder

    validate_wan_folder(folder, variant)
    if WAN_LAYOUTS[variant].conditioning != "concat":
        raise SviError(f"{folder} is {variant}, which conditions by replacing the first latent "
                       "frame; training supports the 36-channel concat models (Wan 2.1 I2V, "
                       "2.2 I2V A14B)")  # fmt: skip


def _clip_geometry(config: TrainConfig, preset: ModelPreset) -> tuple[int, int, int]:
    """(height, width, num_frames) of a training clip: the config's, else the preset's."""
    h = config.height or preset.height
    w = config.width or preset.width
    f = config.num_frames or preset.num_frames
    if preset.family == "world":
        if config.init is None and (h, w) == (preset.height, preset.width) and 3 <= f <= 17:
            return h, w, f  # a model trained from scratch may choose its clip length
        if (h, w, f) != (preset.height, preset.width, preset.num_frames):
            raise SviError(f"the {preset.name} model's clip size is fixed: height "
                           f"{preset.height}, width {preset.width}, {preset.num_frames} "
                           f"frames (from scratch: 3..17 frames); got {h}, {w}, {f}")  # fmt: skip
        return h, w, f
    for side, value in (("height", h), ("width", w)):
        if value % WAN_MULTIPLE:
            raise SviError(f"{side} {value} is not a multiple of {WAN_MULTIPLE} (Wan: 8x VAE "
                           "and 2x2 patches)")  # fmt: skip
    if f < 5 or (f - 1) % 4:
        raise SviError(f"num_frames must be 4k + 1 (5, 9, ..., 81) for the Wan VAE, got {f}")
    return h, w, f


_CONDITION_KIND = {"audio": "talking", "pose": "dancing"}  # world kind driven by each


def _check_condition(config: TrainConfig) -> None:
    """A conditional run (SVI-Talk / SVI-Dance) trains on the world's talking or dancing
    episodes, whose audio / pose streams come with them."""
    kind = config.data.condition
    if kind is None:
        return
    if config.data.source != "world":
        raise SviError(f"data.condition = {kind!r} trains on the procedural world's "
                       f"{_CONDITION_KIND[kind]} episodes; dataset folders are not read with "
                       "a condition yet")  # fmt: skip
    if set(config.data.kinds) != {_CONDITION_KIND[kind]}:
        raise SviError(f"data.condition = {kind!r} needs data.kinds = "
                       f"[\"{_CONDITION_KIND[kind]}\"], got {list(config.data.kinds)}")  # fmt: skip
    if config.expert is not None:
        raise SviError("a condition with --expert (Wan 2.2 A14B) is not supported")
    if config.erft is not None and config.erft.image_errors == "rollout":
        raise SviError("erft.image_errors = 'rollout' is not supported with a condition")
    if not config.lora_rank:
        raise SviError("a condition is trained with a LoRA (set lora_rank)")


def _check_expert(config: TrainConfig, preset: ModelPreset) -> None:
    """``expert`` needs a model with two experts (Wan 2.2 I2V A14B) and a LoRA run."""
    if config.expert is None:
        return
    from svi.models.wan import WAN_LAYOUTS

    layout = WAN_LAYOUTS.get(preset.name) if preset.family == "wan" else None
    if layout is None or not layout.two_experts:
        raise SviError(f"expert = {config.expert!r} needs a model with two experts (Wan 2.2 "
                       f"I2V A14B); {preset.name} has one")  # fmt: skip
    if not config.lora_rank:
        raise SviError(f"expert = {config.expert!r} trains per-expert LoRAs; set lora_rank")


def motion_latents(motion_frames: int, temporal_factor: int) -> int:
    """Latent frames that the first ``motion_frames`` pixel frames alone determine."""
    return 1 + (motion_frames - 1) // temporal_factor


def _check_anchor_first(codec: str, m: int, f: int) -> None:
    """The 2.0 Pro layout fits: anchor + motion latents leave latent frames to generate."""
    temporal = _CODEC_GEOMETRY[codec][2]
    given, total = 1 + motion_latents(m, temporal), 1 + (f - 1) // temporal
    if given >= total:
        raise SviError(f"data.padding 'anchor-first': the anchor and {given - 1} motion latent "
                       f"frames fill all {total} latent frames of the clip")  # fmt: skip


def _check_replay_memory(erft: ErftConfig, codec: str, h: int, w: int, f: int) -> None:
    """``spatial_pool`` divides the latent size; ``max_bytes`` holds one error per bin."""
    channels, spatial, temporal = _CODEC_GEOMETRY[codec]
    lh, lw = h // spatial, w // spatial
    pool = erft.spatial_pool
    if lh % pool or lw % pool:
        raise SviError(f"erft.spatial_pool {pool} does not divide the latent size {lh}x{lw} "
                       f"of {h}x{w} clips")  # fmt: skip
    entry = channels * (1 + (f - 1) // temporal) * (lh // pool) * (lw // pool) * BANK_ENTRY_BYTES
    if erft.max_bytes is not None and erft.max_bytes < erft.num_bins * entry:
        raise SviError(
            f"erft.max_bytes {erft.max_bytes} cannot hold one error per bin: "
            f"{erft.num_bins} bins x {entry} bytes = {erft.num_bins * entry}"
        )


def check_dataset(root: Path) -> None:
    """The dataset folder's CSVs are valid and list at least one video."""
    from svi.data import VideoFolderDataset

    if len(VideoFolderDataset(root)) == 0:
        raise SviError(f"dataset {root} has no videos")
