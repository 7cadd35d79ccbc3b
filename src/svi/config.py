"""Training configuration: frozen dataclasses, one source of defaults, TOML recipes.

A recipe is a TOML file whose tables mirror these dataclasses::

    preset = "world-tiny"
    steps = 6000
    [data]
    kinds = ["consistent", "creative"]
    [optim]
    lr = 1e-3

Unknown keys are errors (a typo must not silently train something else).

``extends = "other.toml"`` (a path relative to the recipe) starts from another recipe:
its tables are merged key by key with this file's, this file winning. The other recipe
may extend a third one; a cycle or a missing file is an error.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svi.errors import SviError
from svi.models.presets import PREDICTIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


PADDINGS = ("anchor", "zeros", "last", "anchor-first")  # conditioning layouts of training
EXPERTS = ("high", "low", "both")  # Wan 2.2 A14B: the expert(s) a LoRA run trains
MASKS = ("first", "motion")
WEIGHTINGS = ("none", "bell", "x0")  # loss weight over sigma (see TrainConfig)
LOSS_FRAMES = ("all", "generated")  # frames the loss averages over (see TrainConfig)
# DiT fields a base-training run may change (the preset's transformer config otherwise)
DIT_FIELDS = ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "patch_size")


@dataclass(frozen=True)
class DataConfig:
    """Training clips: the procedural world or a dataset folder, and their conditioning.

    ``motion_frames``, ``padding`` and ``mask`` left unset take the model preset's (for
    Wan: M = 1, anchor padding, mask on latent frame 0 - the format ``svi generate``
    uses); the run's ``config.json`` records the values used.
    """

    source: str = "world"  # "world" or a dataset folder (<root>/<category>/<category>.csv)
    kinds: tuple[str, ...] = ("consistent", "creative")
    pool_size: int = 2048  # world episodes rendered once at start, sampled with replacement
    episode_frames: int = 48
    motion_frames: int | None = None  # M real frames given to the model; None: the preset's
    p_single_frame: float = 0.1  # use M = 1 with this probability (the first clip at inference)
    padding: str | None = None  # anchor | zeros | last | anchor-first (2.0 Pro); None: preset's
    mask: str | None = None  # first (SVI: latent frame 0) | motion (all motion frames)
    # several layouts trained natively: each batch draws its padding from this list
    # (uniformly; ``padding`` is then unused); empty: ``padding`` alone
    padding_mix: tuple[str, ...] = ()
    text_dropout: float = 0.1  # empty prompt with this probability (for CFG)
    random_crop: bool = False  # dataset folders: a random crop of the clip's aspect per sample
    crop_min_scale: float = 0.8  # random_crop: crop side in [this, 1] x the largest crop
    # SVI-Talk / SVI-Dance: train the audio modules / pose encoder with the LoRA; the
    # condition of a sample is dropped (zeros, the null condition) with condition_dropout.
    condition: str | None = None  # audio | pose (world kinds talking | dancing)
    condition_dropout: float = 0.1

    def __post_init__(self) -> None:
        if not self.kinds:
            raise SviError("data.kinds must name at least one world kind")
        for name in ("pool_size", "episode_frames"):
            _positive_int(getattr(self, name), f"data.{name}")
        if self.motion_frames is not None:
            _positive_int(self.motion_frames, "data.motion_frames")
        if self.condition is not None and self.condition not in ("audio", "pose"):
            raise SviError(f"data.condition must be audio or pose, got {self.condition!r}")
        for name in ("p_single_frame", "text_dropout", "condition_dropout"):
            _probability(getattr(self, name), f"data.{name}")
        if self.padding is not None and self.padding not in PADDINGS:
            raise SviError(
                f"data.padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}"
            )
        for padding in self.padding_mix:
            if padding not in PADDINGS:
                raise SviError(f"data.padding_mix entries must be among {', '.join(PADDINGS)}, "
                               f"got {padding!r}")  # fmt: skip
        if self.mask is not None and self.mask not in MASKS:
            raise SviError(f"data.mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if not isinstance(self.random_crop, bool):
            raise SviError(f"data.random_crop must be true or false, got {self.random_crop!r}")
        scale = _number(self.crop_min_scale, "data.crop_min_scale")
        if not 0.0 < scale <= 1.0:  # also refuses NaN
            raise SviError(f"data.crop_min_scale must be in (0, 1], got {self.crop_min_scale}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    schedule: str = "cosine"  # constant | cosine (after warm-up)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        lr = _number(self.lr, "optim.lr")
        if not (math.isfinite(lr) and lr > 0):
            raise SviError(f"optim.lr must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "min_lr_ratio", "grad_clip"):
            _non_negative(getattr(self, name), f"optim.{name}")
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or (self.warmup_steps < 0)
        ):
            raise SviError(f"optim.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")


REPLACEMENTS = ("l2", "random", "fifo")  # = svi.erft.bank.REPLACEMENTS (svi.erft imports us)


@dataclass(frozen=True)
class ErftConfig:
    """Error-Recycling Fine-Tuning knobs (SVI_SPEC section 3); defaults of the released scripts."""

    p_noise: float = 0.01
    p_video: float = 0.9
    p_image: float = 0.9
    p_clean: float = 0.2
    clean_bank_prob: float = 0.1
    image_error_frames: int = 3
    error_scale: float = 1.0
    num_bins: int = 50
    capacity: int = 500
    replacement: str = "l2"
    share_errors: str = "warmup"  # warmup | always | never
    share_warmup_steps: int = 50
    bin_shift: float | None = None  # shift of the bins' sigma grid; None: the sampler's
    image_sigma_max: float = 1.0  # E_img only from bins with sigma <= this (1: all bins)
    image_errors: str = "bank"  # E_img from: "bank" (one-step video errors) | "rollout"
    rollout_every: int = 4  # "rollout": harvest one generated clip's error every N steps
    rollout_steps: int = 10  # "rollout": sampler steps of that generation
    # replay-memory bounds (not in the released scripts, whose banks are unbounded):
    spatial_pool: int = 1  # store errors average-pooled this many x over (h, w)
    max_bytes: int | None = None  # cap on EACH bank: lowers the per-bin capacity to fit

    def __post_init__(self) -> None:
        for name in ("num_bins", "capacity", "image_error_frames", "spatial_pool"):
            _positive_int(getattr(self, name), f"erft.{name}")
        if self.max_bytes is not None:
            _positive_int(self.max_bytes, "erft.max_bytes")
        if self.replacement not in REPLACEMENTS:
            raise SviError(
                f"erft.replacement must be one of {', '.join(REPLACEMENTS)}, "
                f"got {self.replacement!r}"
            )
        if self.bin_shift is not None and not (
            math.isfinite(self.bin_shift) and self.bin_shift > 0
        ):
            raise SviError(f"erft.bin_shift must be a positive number, got {self.bin_shift}")
        if not (0.0 < self.image_sigma_max <= 1.0):  # also refuses NaN
            raise SviError(f"erft.image_sigma_max must be in (0, 1], got {self.image_sigma_max}")
        if self.image_errors not in ("bank", "rollout"):
            raise SviError(
                f"erft.image_errors must be 'bank' or 'rollout', got {self.image_errors!r}"
            )
        for name in ("rollout_every", "rollout_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SviError(f"erft.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Handcrafted degradations of y's conditioning frames (paper Table 6 baseline).

    The contender to ERFT's image error: blur, Gaussian noise and colour jitter on the
    same slice ``y[:, 4:, :frames]`` (see :mod:`svi.erft.augment`). Strengths are maxima;
    each is drawn uniformly up to its maximum. Units are those of y's latent part:
    [-1, 1] pixels for the world model, normalised VAE latents for Wan.
    """

    p_blur: float = 0.5
    blur_sigma: float = 1.5  # max Gaussian sigma, in (latent) pixels
    p_noise: float = 0.5
    noise_std: float = 0.3  # max std of the additive Gaussian noise
    p_colour: float = 0.5
    brightness: float = 0.15  # max offset shared by all channels
    colour_shift: float = 0.15  # max extra offset per channel
    contrast: float = 0.3  # max relative contrast change: factor in [1 - c, 1 + c]
    p_clean: float = 0.2  # probability that a sample gets none (as ERFT's p_clean)
    frames: int = 3  # k first latent frames of y (as ERFT's image_error_frames)

    def __post_init__(self) -> None:
        for name in ("p_blur", "p_noise", "p_colour", "p_clean"):
            _probability(getattr(self, name), f"augment.{name}")
        for name in ("blur_sigma", "noise_std", "brightness", "colour_shift", "contrast"):
            _non_negative(getattr(self, name), f"augment.{name}")
        if self.contrast > 1.0:
            raise SviError(f"augment.contrast must be <= 1 (factor >= 0), got {self.contrast}")
        _positive_int(self.frames, "augment.frames")


def _check_dit(dit: Any) -> None:
    if not isinstance(dit, dict):
        raise SviError("dit must be a table of DiT sizes")
    for key, value in dit.items():
        if key not in DIT_FIELDS:
            raise SviError(f"unknown key dit.{key}; known: {', '.join(DIT_FIELDS)}")
        if key == "patch_size":
            if not isinstance(value, list | tuple) or len(value) != 3:
                raise SviError(f"dit.patch_size must be 3 integers (t, h, w), got {value!r}")
            for v in value:
                _positive_int(v, "dit.patch_size")
        else:
            _positive_int(value, f"dit.{key}")


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SviError(f"{where} must be an integer >= 1, got {value!r}")
    return value


def _probability(value: Any, where: str) -> float:
    p = _number(value, where)
    if not 0.0 <= p <= 1.0:
        raise SviError(f"{where} must be in [0, 1], got {value}")
    return p


def _non_negative(value: Any, where: str) -> float:
    v = _number(value, where)
    if not (math.isfinite(v) and v >= 0.0):
        raise SviError(f"{where} must be finite and >= 0, got {v}")
    return v


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SviError(f"{where} must be a number, got {value!r}")
    return float(value)


# Upper bounds of training counts: past them a value is a typo, does not fit torch's
# generator, or cannot fit in memory (checked with the recipe, before a run folder exists).
TRAIN_LIMITS = {"seed": 2**63 - 1, "steps": 10**9, "batch_size": 4096, "lora_rank": 4096}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Unset model-dependent fields (``preset``, the clip geometry, the
    data's conditioning format) are filled in from the model by
    :func:`svi.train_setup.resolve_config` before anything loads; the run records those."""

    preset: str | None = None  # None: the preset of ``init``'s folder, else "world-tiny"
    init: str | None = None  # start weights: None (random, base training), "embedded", or a dir
    height: int | None = None  # clip size in pixels (Wan: multiples of 16); None: the preset's
    width: int | None = None
    num_frames: int | None = None  # pixel frames per clip (Wan: 4k + 1); None: the preset's
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    ema_decay: float | None = 0.999
    shift: float | None = None  # training sigma shift; None = the preset's
    # none | bell (timestep_weight of the released code) | x0 (sigma^2: the MSE of the
    # clean clip the velocity implies, x_t - sigma v)
    weighting: str = "none"
    # "generated": the loss skips the latent frames y's mask marks as given (the motion
    # frames, known to the model); "all": every frame, as the released code
    loss_frames: str = "all"
    dit: dict[str, Any] | None = None  # base training: DiT sizes over the preset's (DIT_FIELDS)
    # base training: what the DiT outputs (velocity | x0-residual); None: the preset's
    prediction: str | None = None
    lora_rank: int | None = None  # None = train the whole DiT; else a peft LoRA
    lora_alpha: int | None = None
    expert: str | None = None  # A14B: high | low | both (per-expert LoRAs); None: transformer
    erft: ErftConfig | None = None
    augment: AugmentConfig | None = None  # handcrafted baseline; excludes erft
    checkpoint_every: int = 500
    log_every: int = 25
    keep_last: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "keep_last"):
            _positive_int(getattr(self, name), name)
        for name in ("height", "width", "num_frames"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SviError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("lora_rank", "lora_alpha"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        for name, high in TRAIN_LIMITS.items():
            value = getattr(self, name)
            if value is not None and value > high:
                raise SviError(f"{name} must be at most {high}, got {value}")
        if self.shift is not None:
            shift = _number(self.shift, "shift")
            if not (math.isfinite(shift) and shift > 0):
                raise SviError(f"shift must be a finite number > 0, got {self.shift}")
        if self.ema_decay is not None and not 0.0 <= _number(self.ema_decay, "ema_decay") < 1.0:
            raise SviError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.weighting not in WEIGHTINGS:
            raise SviError(f"weighting must be one of {', '.join(WEIGHTINGS)}, "
                           f"got {self.weighting!r}")  # fmt: skip
        if self.loss_frames not in LOSS_FRAMES:
            raise SviError(f"loss_frames must be one of {', '.join(LOSS_FRAMES)}, "
                           f"got {self.loss_frames!r}")  # fmt: skip
        if self.dit is not None:
            _check_dit(self.dit)
        if self.prediction is not None and self.prediction not in PREDICTIONS:
            raise SviError(f"prediction must be one of {', '.join(PREDICTIONS)}, "
                           f"got {self.prediction!r}")  # fmt: skip
        if self.expert is not None and self.expert not in EXPERTS:
            raise SviError(f"expert must be one of {', '.join(EXPERTS)}, got {self.expert!r}")
        if self.erft is not None and self.augment is not None:
            raise SviError(
                "a recipe has [erft] (recycled errors) or [augment] (handcrafted degradations) "
                "of the conditioning, not both: they are alternative contenders"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a TOML/JSON value to the annotated dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SviError(f"{where} must be a table")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SviError(f"{where} must be a list")
        args = typing.get_args(tp)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner is None:
            return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
        return tuple(_coerce(inner, v, where) for v in value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise SviError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with their path."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise SviError(f"unknown key {where}.{key}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_recipe(path: str | Path) -> TrainConfig:
    """Read a TOML recipe into a :class:`TrainConfig` (following ``extends``, see module doc)."""
    path = Path(path)
    return from_dict(TrainConfig, _recipe_data(path, ()), where=path.name)


def _recipe_data(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The recipe's tables merged over those of the recipes it extends (``chain``: children)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if chain:
            raise SviError(f"recipe {chain[-1]} extends {path}, which does not exist") from None
        raise SviError(f"recipe {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SviError(f"recipe {path}: {exc}") from None
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise SviError(f"recipe {path}: extends must be a file name (string), got {parent!r}")
    base = path.parent / parent
    seen = (*chain, path)
    if base.resolve() in {p.resolve() for p in seen}:
        cycle = " -> ".join(str(p) for p in (*seen, base))
        raise SviError(f"recipe {seen[0]}: extends forms a cycle: {cycle}")
    return _merge(_recipe_data(base, seen), data)


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``child`` on top, table by table and key by key (the child wins)."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ``svi train --model M`` without a recipe: a LoRA with the released scripts' optimiser
# (AdamW 1e-4, weight decay 0.01, grad clip 1, constant lr, batch 1 per process, the bell
# timestep weighting) at rank 16 (the scripts: 128). Everything else: the defaults above.
LORA_DEFAULTS: dict[str, Any] = {
    "init": "embedded",
    "lora_rank": 16,
    "ema_decay": None,
    "batch_size": 1,
    "weighting": "bell",
    "checkpoint_every": 250,
    "log_every": 10,
    "optim": {"lr": 1e-4, "warmup_steps": 0, "schedule": "constant"},
}


def lora_defaults(erft: bool = False) -> TrainConfig:
    """The built-in recipe of a LoRA fine-tune (:data:`LORA_DEFAULTS`); with ``erft``,
    ERFT with the released scripts' knobs (:class:`ErftConfig`), else a clean LoRA."""
    return from_dict(TrainConfig, {**LORA_DEFAULTS, "erft": {} if erft else None}, "defaults")


def with_overrides(
    config: TrainConfig, settings: dict[str, Any] | None = None, /, **overrides: Any
) -> TrainConfig:
    """A copy with fields replaced and validated as a recipe is (``None`` values ignored).

    ``settings`` keys may be dotted paths into the tables (``"optim.lr"``,
    ``"data.source"``); ``overrides`` are top-level fields. ``erft=True`` turns ERFT on
    (a recipe's ``[erft]`` table is kept, else the defaults), ``erft=False`` turns it off.
    """
    data = config.to_dict()
    for key, value in {**(settings or {}), **overrides}.items():
        if value is None:
            continue
        *tables, name = key.split(".")
        target = data
        for table in tables:
            if not isinstance(target.get(table), dict):
                raise SviError(f"unknown setting {key}: {table} is not a table")
            target = target[table]
        if not tables and name == "erft" and isinstance(value, bool):
            value = (data["erft"] or {}) if value else None
        target[name] = value
    return from_dict(TrainConfig, data, "options")
