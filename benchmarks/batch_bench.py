"""Batched rollouts vs today's per-scene workers (issue 22): scenes per hour of the drift
benchmark on the same cores, as ratios within one run.

Usage: ``.venv/bin/python benchmarks/batch_bench.py [--scenes 8] [--clips 10] [--repeats 3]``

Three ways to roll out and score the same scenes (world-tiny base chaining, the drift
benchmark's settings, features off, a fresh cache each time), interleaved ``--repeats``
times; the median wall time of each gives scenes per hour:

- ``per-scene``: today's default - 2 worker processes, 1 thread each, one scene at a time;
- ``batched``: 1 process, all threads, every scene in one DiT batch (``--batch N``);
- ``batched-2``: 2 worker processes, each with half the scenes in one batch.

Also: DiT forward time per scene at batch 1 and 8 (1 and 2 threads), and how far the
batched frames are from the per-scene ones (share of pixels that differ, largest
difference in grey levels). Writes ``benchmarks/results/batch_bench.json``. Run it on a
quiet machine: two torch processes sharing 2 cores make every figure meaningless.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from svi.bench.drift import run_drift
from svi.bench.runner import Contender, benchmark_config
from svi.fingerprint import code_commit
from svi.world import split_seeds

log = logging.getLogger("batch_bench")
MODES = {"per-scene": (2, 1), "batched": (1, None), "batched-2": (2, "half")}  # jobs, batch


def run_mode(mode: str, seeds: list[int], clips: int, cache: Path) -> float:
    jobs, batch = MODES[mode]
    batch = len(seeds) if batch is None else -(-len(seeds) // 2) if batch == "half" else batch
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    run_drift(None, [Contender("base")], seeds, clips, kind="consistent", split="val",
              config=benchmark_config(), cache_dir=cache, jobs=jobs, batch=batch,
              use_features=False, progress=False)  # fmt: skip
    return time.perf_counter() - t0


def forward_ms(batch: int, threads: int) -> float:
    """Median ms per scene of one DiT forward of the embedded model at ``batch``."""
    from svi.pipeline import SVIPipeline

    torch.set_num_threads(threads)
    bundle = SVIPipeline.from_pretrained(None).bundle
    c, f, h, w = bundle.latent_shape
    cond = bundle.preset.transformer["in_channels"] - c
    x = torch.randn(batch, c + cond, f, h, w)
    text = torch.randn(batch, bundle.preset.text_len, bundle.preset.transformer["text_dim"])
    t = torch.full((batch,), 500.0)
    times = []
    with torch.no_grad():
        for _ in range(25):
            t0 = time.perf_counter()
            bundle.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text,
                               return_dict=False)  # fmt: skip
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[5:]) / batch


def frame_difference(a: Path, b: Path) -> dict:
    """Per-scene frames of two caches (per-scene vs batched): how far apart."""
    diffs = []
    for pa in sorted(a.rglob("consistent-*.npz")):
        pb = next(b.rglob(pa.name))
        with np.load(pa) as fa, np.load(pb) as fb:
            diffs.append(np.abs(fa["frames"].astype(int) - fb["frames"]))
    d = np.stack(diffs)
    return {"share_of_values_differing": float((d > 0).mean()), "max_grey_levels": int(d.max()),
            "mean_grey_levels": float(d.mean())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_bench.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = split_seeds("val", args.scenes)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="svi-batch-bench-") as tmp:
        for r in range(args.repeats):
            for mode in MODES:
                cache = Path(tmp) / f"{mode}-{r}"
                times[mode].append(run_mode(mode, seeds, args.clips, cache))
                log.info("repeat %d %-10s %.1f s", r + 1, mode, times[mode][-1])
        difference = frame_difference(Path(tmp) / "per-scene-0", Path(tmp) / "batched-0")
    median = {m: statistics.median(t) for m, t in times.items()}
    per_hour = {m: 3600 * args.scenes / t for m, t in median.items()}
    result = {
        "command": "python benchmarks/batch_bench.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "commit": code_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
        "scenes": args.scenes, "clips": args.clips, "repeats": args.repeats,
        "seconds": times, "median_seconds": median, "scenes_per_hour": per_hour,
        "ratio_vs_per_scene": {m: median["per-scene"] / t for m, t in median.items()},
        "forward_ms_per_scene": {f"batch {b}, {n} thread(s)": forward_ms(b, n)
                                 for b in (1, 8) for n in (1, 2)},
        "batched_vs_per_scene_frames": difference,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    log.info("| mode | median s | scenes / h | vs per-scene |\n| --- | --- | --- | --- |")
    for m in MODES:
        log.info("| %s | %.1f | %.0f | %.2fx |", m, median[m], per_hour[m],
                 result["ratio_vs_per_scene"][m])  # fmt: skip
    log.info("forward ms per scene: %s", result["forward_ms_per_scene"])
    log.info("batched vs per-scene frames: %s", difference)


if __name__ == "__main__":
    main()
