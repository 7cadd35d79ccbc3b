"""Drift reports: JSON (everything), markdown tables (summaries with CIs, paired
comparisons) and plots (metric vs clip with 95 % bands), from a :class:`DriftRun`."""

from __future__ import annotations

import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from svi.bench import stats
from svi.bench.drift import (
    CLIP_METRICS,
    METRICS_VERSION,
    MIN_PUBLISHED_SCENES,
    TRUTH_VALUES,
    DriftRun,
    window,
)

CURVE_BOOT = 1000


def _group_truth(run: DriftRun, group: str, metric: str, h: int):
    extra = TRUTH_VALUES.get(metric)
    return None if extra is None else run.group_at_horizon(group, extra, h)


def metrics_of(run: DriftRun) -> list[str]:
    """The metrics with at least one finite value (event following: creative only)."""
    name = run.contenders[0].name
    return [m for m in CLIP_METRICS if np.isfinite(run.curve(name, m)).any()]


def summaries(run: DriftRun) -> dict:
    """{entry: {metric: {h: Interval}}} for every contender and every pooled group."""
    out: dict[str, dict] = {}
    for c in run.contenders:
        out[c.name] = {m: {h: stats.mean_ci(run.at_horizon(c.name, m, h))
                           for h in run.horizons()} for m in metrics_of(run)}  # fmt: skip
    for group, members in run.groups().items():
        if len(members) > 1:
            out[f"{group} (pooled)"] = {
                m: {h: stats.mean_ci(run.group_at_horizon(group, m, h)) for h in run.horizons()}
                for m in metrics_of(run)
            }
    return out


def comparisons(run: DriftRun) -> dict:
    """{"A vs B": {metric: {h: Paired}}} for every pair of groups (seeds pooled)."""
    out: dict[str, dict] = {}
    for a, b in itertools.permutations(run.groups(), 2):
        out[f"{a} vs {b}"] = {
            m: {h: stats.paired(run.group_at_horizon(a, m, h), run.group_at_horizon(b, m, h),
                                CLIP_METRICS[m][0], truth=_group_truth(run, a, m, h))
                for h in run.horizons()}
            for m in metrics_of(run)
        }  # fmt: skip
    return out


def curve_bands(run: DriftRun, group: str) -> dict:
    """{metric: {"mean", "lo", "hi"}} per clip of a group (seeds pooled per scene),
    bootstrapped over scenes."""
    out = {}
    rng = np.random.default_rng(0)
    for m in metrics_of(run):
        idx = rng.integers(0, len(run.seeds), size=(CURVE_BOOT, len(run.seeds)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN clips stay NaN
            c = np.nanmean(np.stack([run.curve(n, m) for n in run.groups()[group]]), axis=0)
            boots = np.nanmean(c[idx], axis=1)  # (boot, clips)
            lo, hi = np.nanpercentile(boots, [2.5, 97.5], axis=0)
            mean = np.nanmean(c, axis=0)
        out[m] = {"mean": _round(mean), "lo": _round(lo), "hi": _round(hi)}
    return out


def _round(x: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(f"{v:.5g}") for v in np.asarray(x, float)]


def provenance(run: DriftRun, config) -> dict:
    from dataclasses import asdict

    from svi import __version__

    return {
        "command": "svi " + " ".join(sys.argv[1:]) if sys.argv else "",
        "commit": run.meta.get("commit", "unknown"),  # taken when the run started
        "svi_version": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "metrics_version": METRICS_VERSION,
        "sampler": {k: v for k, v in asdict(config).items() if k not in ("clips", "seed")},
        **run.meta,
    }


def protocol(run: DriftRun) -> dict:
    reasons = []
    if run.split != "test":
        reasons.append(f"split {run.split!r} is for tuning; publish on 'test'")
    if len(run.seeds) < MIN_PUBLISHED_SCENES:
        reasons.append(f"{len(run.seeds)} scenes < {MIN_PUBLISHED_SCENES}")
    return {"split": run.split, "kind": run.kind, "scenes": len(run.seeds), "seeds": run.seeds,
            "clips": run.clips, "publishable": run.publishable, "not_publishable_because": reasons,
            "horizons": run.horizons(), "horizon_windows": {h: window(h) for h in run.horizons()},
            "metrics": {m: {"better": b, "meaning": d}
                        for m, (b, d) in CLIP_METRICS.items()}}  # fmt: skip


def build_report(run: DriftRun, config) -> dict:
    summ, comp = summaries(run), comparisons(run)
    return {
        "protocol": protocol(run),
        "provenance": provenance(run, config),
        "summary": {e: {m: {str(h): iv.to_dict() for h, iv in hs.items()} for m, hs in ms.items()}
                    for e, ms in summ.items()},
        "paired": {p: {m: {str(h): pr.to_dict() for h, pr in hs.items()} for m, hs in ms.items()}
                   for p, ms in comp.items()},
        "per_scene": {c.name: {m: {str(h): _round(run.at_horizon(c.name, m, h))
                                   for h in run.horizons()} for m in metrics_of(run)}
                      for c in run.contenders},
        "curves": {g: curve_bands(run, g) for g in run.groups()},
    }  # fmt: skip


SHORT = {"identity": "identity", "identity_located": "identity (located)",
         "background_error": "bg error", "colour_drift": "colour drift", "grid_energy": "grid",
         "motion": "motion", "seam": "seam", "flicker": "flicker", "feature_clip1": "feat. clip 1",
         "feature_truth": "feat. truth", "event_following": "events"}  # fmt: skip


def markdown(report: dict, focus: str | None = None) -> str:
    """Summary tables per horizon and paired comparisons of ``focus`` vs the others."""
    p, prov = report["protocol"], report["provenance"]
    reasons = "; ".join(p["not_publishable_because"])
    state = "publishable" if p["publishable"] else f"NOT publishable: {reasons}"
    lines = [f"Drift benchmark, {p['kind']} scenes, **{p['split']} split**, {p['scenes']} scenes x "
             f"{p['clips']} clips ({state}).", "",
             f"Command: `{prov['command']}` (commit `{prov['commit'][:12]}`, "
             f"{prov['metrics_version']}).",
             "Cells: mean over scenes [95 % bootstrap CI]; a horizon h averages the last "
             "max(5, h/5) clips up to h (clip 1 alone)."]  # fmt: skip
    summary = report["summary"]
    metrics = list(next(iter(summary.values())))
    for h in [str(h) for h in p["horizons"]]:
        lines += ["", f"**Clip {h}**", "",
                  "| contender | " + " | ".join(SHORT[m] for m in metrics) + " |",
                  "|" + " --- |" * (len(metrics) + 1)]  # fmt: skip
        for entry, ms in summary.items():
            cells = [_cell(ms[m][h]) for m in metrics]
            lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    groups = sorted({k.split(" vs ")[0] for k in report["paired"]})
    focus = focus if focus in groups else (groups[0] if groups else None)
    pairs = [k for k in report["paired"] if k.startswith(f"{focus} vs ")]
    if pairs:
        lines += ["", f"**Paired: {focus} vs each other contender** (difference A - B "
                  "[95 % CI], scenes where A is better / scenes; bold: CI excludes 0; "
                  "motion: difference of distances to the truth's motion)"]  # fmt: skip
        for h in [str(h) for h in p["horizons"] if h != 1]:
            lines += ["", f"Clip {h}:", "", "| comparison | " +
                      " | ".join(SHORT[m] for m in metrics) + " |",
                      "|" + " --- |" * (len(metrics) + 1)]  # fmt: skip
            for pair in pairs:
                cells = [_pair_cell(report["paired"][pair][m][h]) for m in metrics]
                lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(iv: dict) -> str:
    if iv["mean"] is None:
        return "-"
    if iv["lo"] is None:
        return f"{iv['mean']:.3f}"
    return f"{iv['mean']:.3f} [{iv['lo']:.3f}, {iv['hi']:.3f}]"


def _pair_cell(pr: dict) -> str:
    d = pr["diff"]
    if d["n"] == 0 or d["lo"] is None:
        return "-" if d["mean"] is None else f"{d['mean']:+.3f} {pr['wins']}/{d['n']}"
    text = f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] {pr['wins']}/{d['n']}"
    return f"**{text}**" if pr["significant"] else text


HEADLINE = ("identity", "background_error", "colour_drift", "motion", "feature_truth",
            "event_following")  # fmt: skip


def headline(report: dict) -> str:
    """The README table: pooled groups (single contenders otherwise), clip 1 -> 10 -> 50
    (-> 200), for the headline metrics."""
    p, summary = report["protocol"], report["summary"]
    hs = [str(h) for h in p["horizons"] if h in (1, 10, 50, 200)]
    group_of = {n: c["group"] for n, c in report["provenance"]["contenders"].items()}
    size = {g: list(group_of.values()).count(g) for g in group_of.values()}
    entries = [e for e in summary if e.endswith(" (pooled)") or size.get(group_of.get(e)) == 1]
    metrics = [m for m in HEADLINE if m in next(iter(summary.values()))]
    lines = ["| contender | " + " | ".join(SHORT[m] for m in metrics) + " |",
             "|" + " --- |" * (len(metrics) + 1)]  # fmt: skip
    for e in entries:
        cells = []
        for m in metrics:
            values = [summary[e][m][h]["mean"] for h in hs]
            cells.append(" -> ".join("-" if v is None else f"{v:.2f}" for v in values))
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """One panel per metric: pooled mean per clip with its 95 % band, one line per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["curves"]
    metrics = list(next(iter(curves.values())))
    cols = 4
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        for group, bands in curves.items():
            mean = np.asarray(bands[m]["mean"], dtype=float)
            x = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(x, mean, label=group, lw=1.2)
            lo = np.asarray(bands[m]["lo"], dtype=float)
            hi = np.asarray(bands[m]["hi"], dtype=float)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(f"{SHORT[m]} ({CLIP_METRICS[m][0]} is better)", fontsize=9)
        ax.set_xlabel("clip")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    p = report["protocol"]
    fig.suptitle(f"{p['kind']}, {p['split']} split, {p['scenes']} scenes "
                 f"(mean, 95 % band over scenes)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(run: DriftRun, config, stem: Path, focus: str | None = None) -> dict:
    """Write ``stem.json``, ``stem.md`` and ``stem.png``; returns the report."""
    report = build_report(run, config)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(report, focus), encoding="utf-8")
    stem.with_suffix(".headline.md").write_text(headline(report), encoding="utf-8")
    plot(report, stem.with_suffix(".png"))
    return report
