"""Training-seed-aware intervals for a committed drift result (issue 22), from its own
per-scene values: no rollout, no model.

Usage: ``.venv/bin/python benchmarks/seed_intervals.py RESULT.json [RESULT.json ...]
[--focus erft-lowimg] [--shipped svi_lora=erft-lowimg-s1 --shipped clean_lora=clean-s1]``

For every result: each recipe (contenders that differ only in their training seed) vs
the focus recipe with a hierarchical paired bootstrap (training seeds resampled within
each recipe, then scenes, shared by both sides), and the shipped files - one training
seed each, as a user gets them - with a scene bootstrap; at every horizon, for the
metrics whose better direction needs no per-clip truth value. Writes
``benchmarks/results/seed-intervals-STEM.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from svi.bench import stats
from svi.bench.report import _pair_cell

log = logging.getLogger("seed_intervals")


def values(report: dict, name: str, metric: str, h: str) -> np.ndarray:
    v = report["per_scene"][name][metric][h]
    return np.asarray([np.nan if x is None else x for x in v], dtype=float)


def analyse(report: dict, focus: str, shipped: dict[str, str]) -> dict:
    contenders = report["provenance"]["contenders"]
    groups: dict[str, list[str]] = {}
    for name, c in contenders.items():
        if not c.get("reference"):
            groups.setdefault(c.get("group") or name, []).append(name)
    recorded = report["per_scene"][groups[focus][0]]
    # before drift-v3, "seam" (boundary minus within-clip change, lower is better)
    # rewarded jitter: left out
    skip = {"seam"} if report["provenance"]["metrics_version"] < "drift-v3" else set()
    metrics = {m: d["better"] for m, d in report["protocol"]["metrics"].items()
               if d["better"] != "truth" and m in recorded and m not in skip}  # fmt: skip
    horizons = [str(h) for h in report["protocol"]["horizons"] if h != 1]
    out: dict = {"recipes": {}, "shipped": {}, "intervals": stats.interval_method()}
    for other in [g for g in groups if g != focus]:
        out["recipes"][f"{focus} vs {other}"] = {
            m: {h: stats.paired_groups(np.stack([values(report, n, m, h) for n in groups[focus]]),
                                       np.stack([values(report, n, m, h) for n in groups[other]]),
                                       better).to_dict() for h in horizons}
            for m, better in metrics.items()}  # fmt: skip
    (a_file, a), (b_file, b) = list(shipped.items())[:2]
    out["shipped"][f"{a_file} vs {b_file}"] = {
        m: {h: stats.paired(values(report, a, m, h), values(report, b, m, h), better).to_dict()
            for h in horizons} for m, better in metrics.items()}  # fmt: skip
    out["metrics"], out["horizons"], out["groups"] = metrics, horizons, groups
    return out


def markdown(stem: str, report: dict, result: dict, focus: str, shipped: dict) -> str:
    p = report["protocol"]
    lines = [f"Seed-aware intervals for `{stem}` ({p['kind']}, {p['split']} split, "
             f"{p['scenes']} scenes x {p['clips']} clips, {report['provenance']['metrics_version']}"
             "), recomputed from its per-scene values by `python benchmarks/seed_intervals.py`.",
             "", "Cells: difference A - B [95 % CI], scenes where A is better / scenes; bold: "
             "the interval excludes 0. Recipes: training seeds resampled within each recipe, "
             "then scenes (paired). Shipped files: " + ", ".join(f"`{f}` = {n}" for f, n in
             shipped.items()) + ", scenes resampled."]  # fmt: skip
    metrics = list(result["metrics"])
    for section, title in (("recipes", f"Recipes: {focus} vs each other recipe"),
                           ("shipped", "Shipped files")):  # fmt: skip
        for h in result["horizons"]:
            lines += ["", f"**{title}, clip {h}**", "",
                      "| comparison | " + " | ".join(metrics) + " |",
                      "|" + " --- |" * (len(metrics) + 1)]  # fmt: skip
            for pair, ms in result[section].items():
                lines.append(f"| {pair} | " + " | ".join(_pair_cell(ms[m][h]) for m in metrics)
                             + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--focus", default="erft-lowimg")
    parser.add_argument("--shipped", action="append",
                        default=None, help="FILE=CONTENDER (two of them)")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shipped = dict(s.split("=", 1) for s in (args.shipped or
                   ["svi_lora=erft-lowimg-s1", "clean_lora=clean-s1"]))  # fmt: skip
    for path in args.results:
        report = json.loads(path.read_text(encoding="utf-8"))
        result = analyse(report, args.focus, shipped)
        stem = path.name.removesuffix(".json")
        out = path.parent / f"seed-intervals-{stem}"
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(markdown(stem, report, result, args.focus, shipped),
                                          encoding="utf-8")  # fmt: skip
        log.info("written: %s.md, .json", out)


if __name__ == "__main__":
    main()
