"""Training checkpoints as safetensors + JSON only (never pickle), written atomically.

    <out>/checkpoints/step-0000500/
        model.safetensors       trainable weights (whole DiT or LoRA)
        ema.safetensors         EMA weights (if enabled)
        optimizer.safetensors   AdamW moments, flattened as state.<param>.<name>
        extra.safetensors       anything else with tensors (RNG states, error banks)
        state.json              step, optimizer param groups, run config, metadata
        extra-rank<r>.*         the per-process extras of ranks r > 0 (multi-process runs)

A checkpoint directory appears under its final name only when complete (written to
``.tmp-*`` then renamed), so a crash never leaves a half checkpoint to resume from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from svi.errors import SviError

CKPT_DIR = "checkpoints"
PREFIX = "step-"


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """Split an optimizer state dict into flat tensors and JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: Any
) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def save_checkpoint(
    out: Path,
    step: int,
    *,
    model: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically and prune all but the ``keep_last`` newest."""
    root = out / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    _save(model, tmp / "model.safetensors")
    if ema is not None:
        _save(ema, tmp / "ema.safetensors")
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    _save(opt_tensors, tmp / "optimizer.safetensors")
    _save(extra or {}, tmp / "extra.safetensors")
    payload = {"step": step, "optimizer": opt_meta, **state}
    (tmp / "state.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(out)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = out / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def save_rank_extra(
    path: Path, rank: int, tensors: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """Add process ``rank``'s own extras (RNG, data position, banks) to checkpoint ``path``."""
    tmp = path / f".tmp-extra-rank{rank}.safetensors"
    _save(tensors, tmp)
    (path / f"extra-rank{rank}.json").write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path / f"extra-rank{rank}.safetensors")


def load_checkpoint(path: Path, rank: int = 0) -> dict[str, Any]:
    """Read a checkpoint directory: tensors dicts plus the parsed ``state.json``.

    ``extra`` / ``extra_json`` are those of process ``rank``.
    """
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        name = "extra" if rank == 0 else f"extra-rank{rank}"
        loaded = {
            "state": state,
            "model": load_file(str(path / "model.safetensors")),
            "optimizer": load_file(str(path / "optimizer.safetensors")),
            "extra": load_file(str(path / f"{name}.safetensors")),
            "extra_json": state
            if rank == 0
            else json.loads((path / f"{name}.json").read_text(encoding="utf-8")),
            "ema": None,
        }
        if (path / "ema.safetensors").exists():
            loaded["ema"] = load_file(str(path / "ema.safetensors"))
    except FileNotFoundError as exc:
        raise SviError(f"checkpoint {path} is incomplete: {exc.filename} is missing") from None
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise SviError(f"checkpoint {path} is corrupt: {exc}") from None
    return loaded
