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

from svi.bench import headline as headline_score
from svi.bench import stats
from svi.bench.drift import (
    CLIP_METRICS,
    METRICS_VERSION,
    MIN_PUBLISHED_SCENES,
    RATIO_DISTANCE,
    TRUTH_VALUES,
    DriftRun,
    window,
)
from svi.bench.runner import REFERENCES

CURVE_BOOT = 1000


def _distance(metric: str):
    """How far a "truth" metric's value is from the truth's (see drift.RATIO_DISTANCE)."""
    return headline_score.ratio_error if metric in RATIO_DISTANCE else None


def compare(run: DriftRun, a: list[str], b: list[str], metric: str, h: int) -> stats.Paired:
    """Contenders ``a`` (a recipe's seeds, or one file) vs ``b`` on the same scenes."""
    va = np.stack([run.at_horizon(n, metric, h) for n in a])
    vb = np.stack([run.at_horizon(n, metric, h) for n in b])
    extra = TRUTH_VALUES.get(metric)
    truth = None if extra is None else run.at_horizon(a[0], extra, h)  # the scene's, per clip
    return stats.paired_groups(va, vb, CLIP_METRICS[metric][0], truth=truth,
                               distance=_distance(metric))  # fmt: skip


def metrics_of(run: DriftRun) -> list[str]:
    """The metrics with at least one finite value (event following: creative only)."""
    name = run.contenders[0].name
    return [m for m in CLIP_METRICS if np.isfinite(run.curve(name, m)).any()]


def summaries(run: DriftRun) -> dict:
    """{entry: {metric: {h: Interval}}}: the truth, every contender and every pooled
    group (its interval resamples training seeds and scenes), then the frozen pictures."""
    out: dict[str, dict] = {}
    groups = run.groups()
    for c in run.contenders:
        out[c.name] = {m: {h: stats.mean_ci(run.at_horizon(c.name, m, h))
                           for h in run.horizons()} for m in metrics_of(run)}  # fmt: skip
        if c.group != c.name and groups[c.group][-1] == c.name:  # after the group's last seed
            out[f"{c.group} (pooled)"] = {
                m: {h: stats.group_ci(run.seeds_at_horizon(c.group, m, h))
                    for h in run.horizons()} for m in metrics_of(run)
            }  # fmt: skip
    bottom = [n for n in REFERENCES if n != "truth" and n in out]
    return {k: out[k] for k in [k for k in out if k not in bottom] + bottom}


def comparisons(run: DriftRun) -> dict:
    """{"A vs B": {metric: {h: Paired}}} for every pair of recipes (model groups; seeds
    and scenes resampled, :func:`svi.bench.stats.paired_groups`)."""
    groups = run.model_groups()
    return {f"{a} vs {b}": {m: {h: compare(run, groups[a], groups[b], m, h)
                                for h in run.horizons()} for m in metrics_of(run)}
            for a, b in itertools.permutations(groups, 2)}  # fmt: skip


def shipped_comparisons(run: DriftRun) -> dict:
    """{"A vs B": {metric: {h: Paired}}} of the files a user gets (one training seed
    each, as shipped: scenes resampled only), labelled by file."""
    files = run.shipped()
    return {f"{a} vs {b}": {m: {h: compare(run, [files[a]], [files[b]], m, h)
                                for h in run.horizons()} for m in metrics_of(run)}
            for a, b in itertools.permutations(files, 2)}  # fmt: skip


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
                        for m, (b, d) in CLIP_METRICS.items()},
            "references": {n: REFERENCES[n] for n in run.references()},
            "headline": {"version": headline_score.HEADLINE_VERSION,
                         "components": list(headline_score.COMPONENTS),
                         "change_floor": headline_score.CHANGE_FLOOR,
                         "appearance_scale": headline_score.APPEARANCE_SCALE,
                         "error_floor": headline_score.ERROR_FLOOR,
                         "minimum": headline_score.HEADLINE_MIN},
            "intervals": stats.interval_method(),
            "shipped": run.shipped()}  # fmt: skip


def build_report(run: DriftRun, config) -> dict:
    summ, comp, ship = summaries(run), comparisons(run), shipped_comparisons(run)
    return {
        "protocol": protocol(run),
        "provenance": provenance(run, config),
        "summary": {e: {m: {str(h): iv.to_dict() for h, iv in hs.items()} for m, hs in ms.items()}
                    for e, ms in summ.items()},
        "paired": {p: {m: {str(h): pr.to_dict() for h, pr in hs.items()} for m, hs in ms.items()}
                   for p, ms in comp.items()},
        "paired_shipped": {p: {m: {str(h): pr.to_dict() for h, pr in hs.items()}
                               for m, hs in ms.items()} for p, ms in ship.items()},
        "per_scene": {c.name: {m: {str(h): _round(run.at_horizon(c.name, m, h))
                                   for h in run.horizons()} for m in metrics_of(run)}
                      for c in run.contenders},
        "curves": {g: curve_bands(run, g) for g in run.groups()},
    }  # fmt: skip


SHORT = {"headline": "headline", "identity": "identity", "identity_located": "identity (located)",
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
             "max(5, h/5) clips up to h (clip 1 alone). A pooled recipe's interval "
             "resamples its training seeds, then the scenes.",
             "Bounds, scored by the same code: " + "; ".join(
                 f"`{n}` = {d}" for n, d in p.get("references", {}).items()) + ".",
             "headline: 1 = the truth, 0 = the start frame held, < 0 worse than it "
             "(objects where the truth has them, motion, seams and flicker like the "
             "truth's, the background; docs/drift-benchmark.md).",
             "Motion and flicker: nearer the truth's is better; seam: the boundary "
             "change's distance to the truth's (lower is better)."]  # fmt: skip
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
    lines += _pair_tables(report["paired"], pairs, metrics, p["horizons"],
                          f"**Paired recipes: {focus} vs each other recipe** (difference A - B "
                          "[95 % CI over training seeds and scenes], scenes where A is better "
                          "/ scenes; bold: CI excludes 0; motion, flicker: difference of ratio "
                          "errors against the truth's value)")  # fmt: skip
    shipped = report.get("paired_shipped", {})
    group_of = {n: c.get("group") for n, c in prov.get("contenders", {}).items()}
    files = sorted(p.get("shipped", {}), key=lambda f: group_of.get(p["shipped"][f]) != focus)
    first = [k for k in shipped if files and k.startswith(f"{files[0]} vs ")]  # focus's file
    lines += _pair_tables(shipped, first, metrics, p["horizons"],
                          "**Paired shipped files** (" + ", ".join(f"`{f}` = {n}" for f, n in
                          p.get("shipped", {}).items()) + "; one training seed each, as a "
                          "user gets them: CI over scenes)")  # fmt: skip
    return "\n".join(lines) + "\n"


def _pair_tables(paired: dict, pairs: list[str], metrics: list[str], horizons, title: str):
    if not pairs:
        return []
    lines = ["", title]
    for h in [str(h) for h in horizons if h != 1]:
        lines += ["", f"Clip {h}:", "", "| comparison | " +
                  " | ".join(SHORT[m] for m in metrics) + " |",
                  "|" + " --- |" * (len(metrics) + 1)]  # fmt: skip
        for pair in pairs:
            cells = [_pair_cell(paired[pair][m][h]) for m in metrics]
            lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return lines


def _cell(iv: dict, digits: int = 3) -> str:
    if iv["mean"] is None:
        return "-"
    if iv["lo"] is None:
        return f"{iv['mean']:.{digits}f}"
    return f"{iv['mean']:.{digits}f} [{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]"


def _pair_cell(pr: dict) -> str:
    d = pr["diff"]
    if d["n"] == 0 or d["lo"] is None:
        return "-" if d["mean"] is None else f"{d['mean']:+.3f} {pr['wins']}/{d['n']}"
    text = f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] {pr['wins']}/{d['n']}"
    return f"**{text}**" if pr["significant"] else text


HEADLINE = ("identity_located", "motion", "flicker", "background_error", "feature_truth",
            "event_following")  # fmt: skip


def headline(report: dict) -> str:
    """The README tables: the headline per horizon with its interval, then the main
    metrics clip 1 -> 10 -> 50 (-> 200); pooled recipes (single contenders otherwise) and
    the shipped files, between the truth and the frozen pictures."""
    p, summary = report["protocol"], report["summary"]
    hs = [str(h) for h in p["horizons"] if h in (1, 10, 50, 200)]
    group_of = {n: c["group"] for n, c in report["provenance"]["contenders"].items()}
    size = {g: list(group_of.values()).count(g) for g in group_of.values()}
    shipped = {n: f for f, n in p.get("shipped", {}).items()}
    entries = [e for e in summary if e.endswith(" (pooled)") or size.get(group_of.get(e)) == 1
               or e in shipped]  # fmt: skip
    label = {e: f"{e} (shipped `{shipped[e]}`)" if e in shipped else e for e in entries}
    lines = []
    if "headline" in next(iter(summary.values())):
        lines += ["| contender | " + " | ".join(f"headline, clip {h}" for h in hs) + " |",
                  "|" + " --- |" * (len(hs) + 1)]  # fmt: skip
        for e in entries:
            cells = [_cell(summary[e]["headline"][h], 2) for h in hs]
            lines.append(f"| {label[e]} | " + " | ".join(cells) + " |")
        lines.append("")
    metrics = [m for m in HEADLINE if m in next(iter(summary.values()))]
    lines += ["| contender | " + " | ".join(SHORT[m] for m in metrics) + " |",
              "|" + " --- |" * (len(metrics) + 1)]  # fmt: skip
    for e in entries:
        cells = []
        for m in metrics:
            values = [summary[e][m][h]["mean"] for h in hs]
            cells.append(" -> ".join("-" if v is None else f"{v:.2f}" for v in values))
        lines.append(f"| {label[e]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# the bounds in black and grey, the contenders in colour
REFERENCE_STYLE = {"truth": {"color": "black", "lw": 1.5},
                   "freeze": {"color": "grey", "lw": 1.5, "ls": "--"},
                   "hold-last": {"color": "grey", "lw": 1.0, "ls": ":"}}  # fmt: skip


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
            (line,) = ax.plot(x, mean, label=group, **REFERENCE_STYLE.get(group, {"lw": 1.2}))
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
