"""Training configuration: frozen dataclasses, one source of defaults, TOML recipes.

A recipe is a TOML file whose tables mirror these dataclasses::

    preset = "world-tiny"
    steps = 6000
    [data]
    kinds = ["consistent", "creative"]
    [optim]
    lr = 1e-3

Unknown keys are errors (a typo must not silently train something else).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svi.errors import SviError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DataConfig:
    source: str = "world"  # "world" or a dataset folder (<root>/<category>/<category>.csv)
    kinds: tuple[str, ...] = ("consistent", "creative")
    pool_size: int = 2048  # world episodes rendered once at start, sampled with replacement
    episode_frames: int = 48
    motion_frames: int = 2  # M real frames given to the model
    p_single_frame: float = 0.1  # use M = 1 with this probability (the first clip at inference)
    padding: str = "last"  # anchor | zeros | last
    mask: str = "motion"  # first (SVI: latent frame 0) | motion (all motion frames)
    text_dropout: float = 0.1  # empty prompt with this probability (for CFG)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    schedule: str = "cosine"  # constant | cosine (after warm-up)
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


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


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "world-tiny"
    init: str | None = None  # start weights: None (random, base training), "embedded", or a dir
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    ema_decay: float | None = 0.999
    shift: float | None = None  # training sigma shift; None = the preset's
    weighting: str = "none"  # none | bell (timestep_weight of the released code)
    lora_rank: int | None = None  # None = train the whole DiT; else a peft LoRA
    lora_alpha: int | None = None
    erft: ErftConfig | None = None
    checkpoint_every: int = 500
    log_every: int = 25
    keep_last: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

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
    """Read a TOML recipe into a :class:`TrainConfig`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SviError(f"recipe {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SviError(f"recipe {path}: {exc}") from None
    return from_dict(TrainConfig, data, where=path.name)


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """A copy with top-level fields replaced (None values are ignored)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, **changes)
