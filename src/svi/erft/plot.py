"""Plot of an ERFT run's replay memory: fill and RMS error per bin over training."""

from __future__ import annotations

import json
from pathlib import Path


def plot_banks(run: Path, path: Path | None = None) -> Path:
    """``banks.png`` from ``run/banks.jsonl``: per bank, fill and RMS per bin sigma."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (run / "banks.jsonl").read_text().splitlines()]
    path = path or run / "banks.png"
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
    cmap = plt.get_cmap("viridis")
    picks = records[:: max(1, len(records) // 6)] + records[-1:]
    for col, bank in enumerate(("noise", "video")):
        for i, rec in enumerate(picks):
            colour = cmap(i / max(1, len(picks) - 1))
            sig = rec[bank]["sigma"]
            axes[0, col].plot(sig, rec[bank]["count"], color=colour, label=f"step {rec['step']}")
            axes[1, col].plot(sig, rec[bank]["rms"], color=colour)
        axes[0, col].set_title(f"{bank} bank: errors stored per bin")
        axes[1, col].set_title(f"{bank} bank: RMS of stored errors")
        for row in (0, 1):
            axes[row, col].set_xlabel("bin sigma")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
