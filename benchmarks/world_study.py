"""World model v2 study (issue 23): which training knob moves the first-clip gate.

Every arm is the base recipe (``recipes/world-tiny-base.toml``) with a few keys changed
(``benchmarks/world_study.toml``), trained from scratch for the same compute: the base
arm's steps times the ratio of the base's cost per training step to the arm's, both
timed here, in one process, on random batches of the clip's shape (only arms that change
the DiT's sizes are timed; the others cost what the base costs per step). Each arm is then
scored on validation scenes only (the test split is for the chosen model), first clip:

- the gate of issue 23: MSE <= 0.5 x holding the last given frame, object presence
  >= 0.98 on every generated frame, background PSNR >= holding the last frame's;
- at the preset's sampler (shift 20, 20 steps), at the training shift and with 10 steps
  (the real-time budget), on consistent scenes; creative scenes at the preset's sampler.

Arms are trained one after the other into ``runs/study/<arm>`` and resume where a
session stopped (``svi train --resume`` semantics); finished arms are only scored.

    python benchmarks/world_study.py                       # every arm of the TOML
    python benchmarks/world_study.py --arms base,gen-loss  # some of them
    python benchmarks/world_study.py --report              # table + plot from the JSON
    python benchmarks/world_study.py --curves base,x0res   # every checkpoint of those arms

Writes ``benchmarks/results/world_study_val.json`` (+ ``.md``, ``.png``) and, with
``--curves``, ``world_study_curves_val.json`` (32 validation scenes per checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
ARMS = ROOT / "benchmarks" / "world_study.toml"
RESULTS = ROOT / "benchmarks" / "results" / "world_study_val.json"
CURVES = ROOT / "benchmarks" / "results" / "world_study_curves_val.json"
RUNS = ROOT / "runs" / "study"
SCENES = 64
log = logging.getLogger("world_study")


def arm_config(arm: dict):
    from svi.config import load_recipe, with_overrides

    config = load_recipe(ROOT / arm.get("recipe", "recipes/world-tiny-base.toml"))
    return with_overrides(config, arm.get("set", {}))


def step_cost(config, repeats: int = 12) -> float:
    """Median seconds of one optimiser step of ``config``'s DiT on a random batch."""
    from svi.models.bundle import build_world_transformer
    from svi.train_setup import resolve_config, world_preset

    config = resolve_config(config)
    preset = world_preset(config)
    model = build_world_transformer(preset).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, f, h, w = config.batch_size, preset.num_frames, preset.height, preset.width
    x = torch.randn(b, 3, f, h, w)
    y = torch.randn(b, 7, f, h, w)
    text = torch.randn(b, preset.text_len, preset.transformer["text_dim"])
    t = torch.full((b,), 500.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(torch.cat([x, y], 1), t, text, return_dict=False)[0]
        out.square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def score(final: Path, train_shift: float) -> dict:
    from svi.bench.first_clip import evaluate_first_clip
    from svi.models.bundle import load_bundle
    from svi.world import split_seeds

    bundle = load_bundle(final)
    seeds = split_seeds("val", SCENES)
    settings = {
        "sampler": {},
        "train_shift": {"shift": train_shift},
        "steps10": {"steps": 10},
        "creative": {"kind": "creative"},
    }
    out = {}
    for name, kw in settings.items():
        report = evaluate_first_clip(bundle, seeds, **kw).to_dict()
        report["gate"] = gate(report)
        out[name] = report
        log.info("%s %s: %s", final.parent.name, name, report)
    out["parameters"] = sum(p.numel() for p in bundle.transformer.parameters())
    return out


def gate(r: dict) -> dict:
    """Issue 23's gate figures of one first-clip report."""
    checks = {
        "mse_ratio": r["mse"] / r["copy_mse"],
        "min_presence": min(r["presence_per_frame"]),
        "psnr_margin_db": r["background_psnr"] - r["copy_background_psnr"],
    }
    checks["passed"] = bool(
        checks["mse_ratio"] <= 0.5 and checks["min_presence"] >= 0.98
        and checks["psnr_margin_db"] >= 0
    )  # fmt: skip
    return checks


def run_arm(name: str, arm: dict, base_cost: float, base_steps: int, results: dict) -> None:
    from svi.bench.curves import _minutes_at
    from svi.train import train

    config = arm_config(arm)
    # only the DiT's sizes change the cost of a step; other arms get the base's steps
    # (timing them too would only add the noise of a shared machine)
    cost = base_cost
    if config.dit:  # timed back to back with the base, so both see the same load
        base_now, arm_now = step_cost(arm_config({})), step_cost(config)
        cost = base_cost * arm_now / base_now
    steps = int(arm.get("steps") or round(base_steps * base_cost / cost))
    config = replace(config, steps=steps)
    out = RUNS / name
    log.info("arm %s: %d steps (step cost %.3f s vs base %.3f s)", name, steps, cost, base_cost)
    final = out / "final"
    if not (final / "svi_model.json").exists():
        train(config, out, resume=(out / "config.json").exists(), progress=False)
    minutes = _minutes_at(out)
    steps = json.loads((out / "config.json").read_text(encoding="utf-8"))["steps"]  # as run
    results[name] = {
        "set": arm.get("set", {}),
        "about": arm.get("about", ""),
        "steps": steps,
        "step_cost_s": cost,
        "base_step_cost_s": base_cost,
        "train_minutes_wall": round(max(minutes.values()), 2),
        "train_minutes_alone": round(steps * cost / 60, 2),
        "final_loss": _last_loss(out),
        **score(final, config.shift or 3.0),
    }


def curve(name: str, scenes: int = 32) -> list[dict]:
    """Gate figures of every checkpoint of arm ``name`` (EMA weights, the preset's
    sampler, ``scenes`` validation scenes; :func:`svi.bench.curves.learning_curve`)."""
    from svi.bench.curves import learning_curve

    return [{"step": row["step"], **gate(row)} for row in learning_curve(RUNS / name, scenes)]


def _last_loss(run: Path) -> float:
    lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1])["loss"]


def report(results: dict) -> str:
    head = ("| arm | params | compute (base steps) | steps | gate | MSE / hold-last | min presence "
            "| bg PSNR - hold-last | at train shift: MSE ratio, min presence | 10 steps: "
            "MSE ratio | creative: MSE ratio, min presence |")  # fmt: skip
    lines = [head, "|" + " --- |" * 11]
    for name, r in results.items():
        s, t, q, c = (r[k]["gate"] for k in ("sampler", "train_shift", "steps10", "creative"))
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.2f} M | {_compute(r):.0f} "
            f"| {r['steps']} | {'pass' if s['passed'] else 'fail'} | {s['mse_ratio']:.3f} "
            f"| {s['min_presence']:.3f} | {s['psnr_margin_db']:+.2f} dB "
            f"| {t['mse_ratio']:.3f}, {t['min_presence']:.3f} | {q['mse_ratio']:.3f} "
            f"| {c['mse_ratio']:.3f}, {c['min_presence']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _compute(r: dict) -> float:
    """An arm's compute in steps of the base recipe (its steps x its cost per step / the
    base's, both timed in the same study run): equal for every arm of one budget."""
    return r["steps"] * r["step_cost_s"] / r["base_step_cost_s"]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    colour = {name: f"C{i}" for i, name in enumerate(results)}
    for name, r in results.items():
        s = r["sampler"]["gate"]
        ax[0].scatter(_compute(r), s["mse_ratio"], label=name, color=colour[name])
        ax[1].scatter(_compute(r), s["min_presence"], label=name, color=colour[name])
    curves = json.loads(CURVES.read_text()) if CURVES.exists() else {}
    for name, rows in curves.items():  # checkpoints on 32 scenes: the way there
        steps = [row["step"] for row in rows]
        c = colour.get(name, "grey")
        ax[0].plot(steps, [row["mse_ratio"] for row in rows], ":", lw=1, color=c)
        ax[1].plot(steps, [row["min_presence"] for row in rows], ":", lw=1, color=c)
    ax[0].set_ylim(0.4, 2.2)
    ax[0].axhline(0.5, color="grey", ls="--")
    ax[0].axhline(1.0, color="black", lw=0.8)
    ax[0].set_ylabel("MSE / holding the last frame")
    ax[1].axhline(0.98, color="grey", ls="--")
    ax[1].set_ylabel("presence, worst generated frame")
    for a in ax:
        a.set_xlabel("training compute (steps of the base recipe)")
    ax[0].legend(fontsize=7)
    fig.suptitle(
        "world model v2 study, validation split, first clip (shift 20, 20 steps); "
        "dotted: checkpoints"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", help="comma-separated arm names (default: all)")
    parser.add_argument("--report", action="store_true", help="only rewrite table and plot")
    parser.add_argument("--curves", help="comma-separated arms: score every checkpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    spec = tomllib.loads(ARMS.read_text(encoding="utf-8"))
    arms = spec["arm"]
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.curves:  # a file of their own: a study may be writing RESULTS meanwhile
        curves = json.loads(CURVES.read_text()) if CURVES.exists() else {}
        for name in args.curves.split(","):
            curves[name] = curve(name)
            CURVES.write_text(json.dumps(curves, indent=1) + "\n")
        return
    if not args.report:
        chosen = args.arms.split(",") if args.arms else list(arms)
        base_cost = step_cost(arm_config(arms["base"]))
        for name in chosen:
            run_arm(name, arms[name], base_cost, spec["base_steps"], results)
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    RESULTS.with_suffix(".md").write_text(report(results))
    plot(results, RESULTS.with_suffix(".png"))


if __name__ == "__main__":
    main()
