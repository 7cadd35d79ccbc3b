"""Time to first clip (issue 11): ``svi generate --clips 1`` on the embedded model, on an
idle machine and next to a competing torch process.

Usage: ``.venv/bin/python benchmarks/startup_bench.py [--runs 5] [--out FILE]``

Each measurement is the wall time of a fresh ``svi generate --clips 1`` process, from
exec to exit (Python start-up, imports, model load, one clip, the mp4 written), median
of ``--runs``; the import floor (``import svi.session``, which pulls torch, diffusers'
Wan transformer and peft) is measured the same way. Scenarios, interleaved run by run
so that a drifting machine load hits every row alike:

- ``idle``: nothing else running;
- ``busy``: a competing torch process runs a small-matmul loop on every core with
  OpenMP's default (active, spinning) wait policy - what another PyTorch job does;
- ``busy-passive``: the same competitor started with ``OMP_WAIT_POLICY=PASSIVE``.

Each scenario runs the CLI as shipped (``svi.threads`` picks the threads and wait
policy) and with the pre-fix behaviour forced back (``OMP_NUM_THREADS`` = every core,
which turns the policy off; OpenMP's default spinning): their ratio is the measured
effect of the policy. Results go to JSON (default
``benchmarks/results/startup_bench.json``) and a markdown table on the log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("startup_bench")

COMPETITOR = """
import torch
torch.manual_seed(0)
x = torch.randn(512, 256)
w = torch.randn(256, 256) / 16
while True:
    x = torch.tanh(x @ w)
"""

# An explicit OMP_NUM_THREADS turns svi.threads' policy off: every core, default spinning.
SETTINGS = {"shipped": {}, "pre-fix": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}
CLEARED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")


@contextmanager
def competitor(env_extra: dict[str, str] | None):
    """A busy torch process for the ``with`` block (nothing when ``env_extra`` is None)."""
    if env_extra is None:
        yield
        return
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(env_extra)
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env)
    try:
        time.sleep(3.0)  # past its own import, into the loop
        yield
    finally:
        proc.kill()
        proc.wait()


def timed(cmd: list[str], env_extra: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(env_extra)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/startup_bench.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    svi = str(Path(sys.executable).with_name("svi"))
    scenarios = {"idle": None, "busy": {}, "busy-passive": {"OMP_WAIT_POLICY": "PASSIVE"}}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        generate = [svi, "generate", "--clips", "1", "--overwrite", "--out", f"{tmp}/a.mp4"]
        floor = [sys.executable, "-c", "import svi.session"]
        for run in range(args.runs):
            for scenario, comp in scenarios.items():
                with competitor(comp):
                    times.setdefault(f"{scenario}/import floor", []).append(timed(floor, {}))
                    for name, env in SETTINGS.items():
                        times.setdefault(f"{scenario}/{name}", []).append(timed(generate, env))
            log.info("run %d/%d done", run + 1, args.runs)

    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {s: medians[f"{s}/pre-fix"] / medians[f"{s}/shipped"] for s in scenarios}
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/startup_bench.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": args.runs,
        "seconds": times,
        "median_s": medians,
        "pre_fix_over_shipped": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = ["| scenario | import floor s | shipped s | pre-fix policy s | pre-fix / shipped |",
             "|---|---|---|---|---|"]  # fmt: skip
    for s in scenarios:
        lines.append(
            f"| {s} | {medians[f'{s}/import floor']:.1f} | {medians[f'{s}/shipped']:.1f} "
            f"| {medians[f'{s}/pre-fix']:.1f} | {ratios[s]:.2f} |"
        )
    log.info("\n".join(lines))


if __name__ == "__main__":
    main()
