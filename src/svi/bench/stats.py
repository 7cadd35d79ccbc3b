"""Confidence intervals over scenes and paired comparisons (numpy only).

Scenes are the unit of replication: every summary number is a mean over scenes with a
95 % percentile-bootstrap interval (scenes resampled with replacement), and every
comparison of two contenders uses the per-scene differences on the same scenes and
noise (paired bootstrap) plus a win count. Bootstrap draws come from a fixed seed, so
a report is reproducible to the digit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_BOOT = 4000
LEVEL = 0.95
BETTER = ("lower", "higher", "truth")  # lower is better / higher / nearer the truth's value


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int  # scenes with a finite value

    def to_dict(self) -> dict:
        """JSON-ready: non-finite numbers become None."""
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v
                for k, v in asdict(self).items()}  # fmt: skip

    def __str__(self) -> str:
        if not np.isfinite(self.lo):
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def bootstrap_means(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values`` (n,) -> (n_boot,)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[idx].mean(axis=1)


def mean_ci(values, *, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Mean over scenes and its percentile-bootstrap interval; non-finite values are
    dropped. Fewer than 2 values give an interval of NaN."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if len(x) < 2:
        return Interval(float(x.mean()), float("nan"), float("nan"), 1)
    means = bootstrap_means(x, n_boot, seed)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Interval(float(x.mean()), float(lo), float(hi), len(x))


@dataclass(frozen=True)
class Paired:
    """A vs B on the same scenes: mean difference (A - B) with its interval, and wins."""

    diff: Interval
    wins: int  # scenes where A is better
    losses: int  # scenes where B is better
    better: str

    @property
    def significant(self) -> bool:
        """The interval of the difference excludes zero."""
        return bool(self.diff.lo > 0 or self.diff.hi < 0)

    @property
    def a_better(self) -> bool | None:
        """True / False when the difference is significant, None otherwise."""
        if not self.significant:
            return None
        return (self.diff.mean < 0) if self.better in ("lower", "truth") else (self.diff.mean > 0)

    def to_dict(self) -> dict:
        return {"diff": self.diff.to_dict(), "wins": self.wins, "losses": self.losses,
                "better": self.better, "significant": self.significant,
                "a_better": self.a_better}  # fmt: skip


def paired(a, b, better: str, truth=None, **kw) -> Paired:
    """Compare per-scene values ``a`` and ``b`` (same scenes, same order).

    ``better="truth"`` compares distances to the per-scene ``truth`` values (e.g. motion:
    neither freezing nor jitter is good), and the difference is of those distances.
    """
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same scenes, got {a.shape} and {b.shape}")
    if better == "truth":
        if truth is None:
            raise ValueError("better='truth' needs the truth values")
        t = np.asarray(truth, dtype=float)
        a, b = np.abs(a - t), np.abs(b - t)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    a_wins = d < 0 if better in ("lower", "truth") else d > 0
    b_wins = d > 0 if better in ("lower", "truth") else d < 0
    return Paired(mean_ci(d, **kw), int(a_wins.sum()), int(b_wins.sum()), better)
