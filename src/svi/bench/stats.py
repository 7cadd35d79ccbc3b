"""Confidence intervals over scenes (and training seeds) and paired comparisons (numpy only).

Scenes are the unit of replication for one file: a summary number is a mean over
scenes with a 95 % percentile-bootstrap interval (scenes resampled with replacement),
and a comparison of two files uses the per-scene differences on the same scenes and
noise (paired bootstrap) plus a win count. A *recipe* (a group of files that differ only
in their training seed) varies with the seed too: its intervals resample the training
seeds, then the scenes (:func:`group_ci`, :func:`paired_groups`; a hierarchical
bootstrap), so that "significant" holds for the recipe, not for one lucky seed.
Bootstrap draws come from a fixed seed, so a report is reproducible to the digit.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace

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


RNG_SEED = 0


def interval_method() -> dict:
    """How every interval of a report is made (recorded in its JSON)."""
    return {"method": "percentile bootstrap", "level": LEVEL, "resamples": N_BOOT,
            "rng_seed": RNG_SEED,
            "one file": "scenes resampled with replacement",
            "recipe (pooled seeds) and recipe comparisons": "hierarchical: training seeds "
            "resampled with replacement, then scenes; a comparison resamples the scenes "
            "once for both sides (paired) and each side's seeds on their own"}  # fmt: skip


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
    return _interval(float(x.mean()), bootstrap_means(x, n_boot, seed), len(x), level)


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


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        return np.nanmean(x, axis=axis)


def _seed_scene_draws(values: np.ndarray, scenes: np.ndarray, rng) -> np.ndarray:
    """(n_boot,) scene means of ``values`` (seeds, scenes) at the resampled ``scenes``
    (n_boot, n) with freshly resampled seeds; a seed's NaN scenes are left out."""
    s = values.shape[0]
    seeds = rng.integers(0, s, size=(len(scenes), s))
    drawn = values[seeds[:, :, None], scenes[:, None, :]]  # (n_boot, seeds, scenes)
    return _nanmean(_nanmean(drawn, axis=1), axis=1)


def _interval(point: float, draws: np.ndarray, n: int, level: float) -> Interval:
    if n < 2 or not np.isfinite(draws).any():
        return Interval(point, float("nan"), float("nan"), n)
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return Interval(point, float(lo), float(hi), n)


def group_ci(values, *, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = RNG_SEED):
    """Mean of a recipe over (training seeds, scenes) ``values`` and its hierarchical
    bootstrap interval (seeds, then scenes). One seed: :func:`mean_ci`."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be (seeds, scenes), got shape {v.shape}")
    per_scene = _nanmean(v, axis=0)
    if v.shape[0] == 1:
        return mean_ci(per_scene, level=level, n_boot=n_boot, seed=seed)
    ok = np.isfinite(per_scene)
    v = v[:, ok]
    if v.shape[1] == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    scenes = rng.integers(0, v.shape[1], size=(n_boot, v.shape[1]))
    draws = _seed_scene_draws(v, scenes, rng)
    return _interval(float(per_scene[ok].mean()), draws, v.shape[1], level)


def paired_groups(a, b, better: str, truth=None, distance=None, *, level: float = LEVEL,
                  n_boot: int = N_BOOT, seed: int = RNG_SEED) -> Paired:  # fmt: skip
    """Recipe A vs recipe B on the same scenes: ``a`` (seeds_a, scenes) and ``b``
    (seeds_b, scenes). The difference is of the seed-averaged per-scene values (of
    their distances to ``truth`` (scenes,) for ``better="truth"``; ``distance(x, t)``,
    default ``|x - t|``); its interval resamples the scenes once for both recipes and
    each recipe's seeds on their own. Wins count scenes of the seed-averaged values.
    Two single files (one seed each) give :func:`paired`'s scene bootstrap."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"paired recipes need (seeds, scenes) on the same scenes, got "
                         f"{a.shape} and {b.shape}")  # fmt: skip
    if better not in BETTER:
        raise ValueError(f"better must be one of {BETTER}, got {better!r}")
    if better == "truth":
        if truth is None:
            raise ValueError("better='truth' needs the truth values")
        t = np.asarray(truth, dtype=float)[None]
        dist = distance or (lambda x, y: np.abs(x - y))
        a, b = dist(a, t), dist(b, t)
    if a.shape[0] == 1 and b.shape[0] == 1:
        lower = "lower" if better == "truth" else better
        return replace(paired(a[0], b[0], lower, level=level, n_boot=n_boot, seed=seed),
                       better=better)  # fmt: skip
    ma, mb = _nanmean(a, axis=0), _nanmean(b, axis=0)
    ok = np.isfinite(ma) & np.isfinite(mb)
    a, b, d = a[:, ok], b[:, ok], ma[ok] - mb[ok]
    if len(d) == 0:
        return Paired(Interval(float("nan"), float("nan"), float("nan"), 0), 0, 0, better)
    rng = np.random.default_rng(seed)
    scenes = rng.integers(0, len(d), size=(n_boot, len(d)))
    draws = _seed_scene_draws(a, scenes, rng) - _seed_scene_draws(b, scenes, rng)
    sign = -1 if better in ("lower", "truth") else 1  # > 0: A is better
    wins, losses = (sign * d > 0).sum(), (sign * d < 0).sum()
    return Paired(_interval(float(d.mean()), draws, len(d), level), int(wins), int(losses), better)
