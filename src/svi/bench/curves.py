"""Learning curves: the first-clip gate figures of every checkpoint of a training run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from svi.bench.first_clip import evaluate_first_clip
from svi.checkpoint import list_checkpoints
from svi.errors import SviError
from svi.world import split_seeds

log = logging.getLogger(__name__)


def _minutes_at(run: Path) -> dict[int, float]:
    """Training minutes at each logged step (from ``log.jsonl``, resumes summed)."""
    minutes, offset, last = {}, 0.0, 0.0
    path = run / "log.jsonl"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
            step, elapsed = int(rec["step"]), float(rec["elapsed_s"])
        except (ValueError, TypeError, KeyError, RecursionError):
            raise SviError(f"{path}:{n}: not a line of a training log (step, elapsed_s)") from None
        if elapsed < last:  # a resumed segment restarts its clock
            offset += last
        last = elapsed
        minutes[step] = (offset + last) / 60
    return minutes


def learning_curve(
    run: Path, scenes: int = 32, steps: int | None = None, use_ema: bool = True
) -> list[dict]:
    """Evaluate every checkpoint of ``run`` on ``scenes`` validation scenes."""
    from svi.train import checkpoint_model

    checkpoints = list_checkpoints(run)
    if not checkpoints:
        raise SviError(f"{run} has no checkpoints to evaluate (checkpoints/step-*)")
    seeds = split_seeds("val", scenes)
    minutes = _minutes_at(run)
    rows = []
    for ckpt in checkpoints:
        step = int(ckpt.name.split("-")[1])
        report = evaluate_first_clip(checkpoint_model(ckpt, use_ema=use_ema), seeds, steps=steps)
        rows.append({"step": step, "minutes": minutes.get(step), **report.to_dict()})
        log.info("step %d: %s", step, rows[-1])
    return rows


def plot_curve(rows: list[dict], path: Path, title: str) -> Path:
    """Three panels (background PSNR, presence, MSE vs copy) against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["minutes"] or 0 for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
    ax[0].plot(x, [r["background_psnr"] for r in rows], "o-")
    ax[0].axhline(25, color="grey", ls="--", label="gate 25 dB")
    ax[0].set_ylabel("background PSNR (dB)")
    ax[1].plot(x, [r["presence"] for r in rows], "o-")
    ax[1].axhline(0.9, color="grey", ls="--", label="gate 0.9")
    ax[1].set_ylabel("object presence (location-aware)")
    ax[2].plot(x, [r["mse"] for r in rows], "o-", label="model")
    ax[2].plot(x, [r["copy_mse"] for r in rows], "--", color="grey", label="copy last frame")
    ax[2].set_ylabel("MSE to ground truth (log)")
    ax[2].set_yscale("log")
    for a in ax:
        a.set_xlabel("training minutes (2 CPU cores)")
        a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
