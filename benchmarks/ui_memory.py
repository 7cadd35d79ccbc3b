"""Memory of the ``svi ui`` process against video length (issue 14): one generation of
200 clips through the app's callbacks and job queue, in this one process, with the page's
poll (status, preview snapshot, drift plot, table) called as a browser tab would.

Usage: ``.venv/bin/python benchmarks/ui_memory.py [--model DIR] [--steps N] [--clips 200]``
(default: the embedded model). Resident set size (``VmRSS``) is read after clip 10 and
after the last clip; the result goes to ``benchmarks/results/ui_memory.json``. What the
app keeps per clip is one drift-monitor row (a few numbers): the frames of a clip are
dropped once its row and the preview snapshot (a file copy) are made.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from svi.ui.app import FIELDS, Callbacks
from svi.ui.forms import Form
from svi.ui.jobs import DONE, JobQueue
from svi.ui.sessions import Sessions

log = logging.getLogger("ui_memory")
POLL_SECONDS = 0.5  # the page's timer


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(model: str | None, steps: int | None, clips: int, early: int, folder: Path) -> dict:
    queue = JobQueue(max_jobs=1)
    cb = Callbacks(queue, Sessions(folder))
    form = Form(prompts="a red disc bounces\na blue square enters\nthe lights dim",
                model=model or "", length="clips", amount=clips, seed=0,
                steps=steps)  # fmt: skip
    job_id, message = cb.generate(*(getattr(form, n) for n in FIELDS))
    if job_id is None:
        raise SystemExit(message)
    job, seen, at_early, polls, t0 = queue.get(job_id), -1, None, 0, time.perf_counter()
    while not job.finished:
        _html, _preview, fig, _table, seen = cb.poll(job_id, seen)
        del fig  # the page sends it and forgets it
        polls += 1
        if at_early is None and job.clip >= early:
            gc.collect()
            at_early = {"clip": job.clip, "rss_mb": round(rss_mb(), 1)}
            log.info("after clip %d: %.1f MB", job.clip, at_early["rss_mb"])
        time.sleep(POLL_SECONDS if job.clip >= early else 0.01)
    seconds = time.perf_counter() - t0
    cb.poll(job_id, -1)
    gc.collect()
    at_end = {"clip": job.clip, "rss_mb": round(rss_mb(), 1)}
    if job.state != DONE:
        raise SystemExit(f"the job ended {job.state}: {job.error}")
    queue.close()
    return {"early": at_early, "end": at_end, "seconds": round(seconds, 1), "polls": polls,
            "growth_mb": round(at_end["rss_mb"] - at_early["rss_mb"], 1),
            "frames": job.manifest["frames_written"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: embedded)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps per clip")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--early", type=int, default=10, help="clip of the first reading")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ui_memory.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.model, args.steps, args.clips, args.early, Path(tmp))
    report = {
        "benchmark": "svi ui: process RSS after clip 10 vs after the last clip (issue 14)",
        "model": args.model or "embedded (world-default)",
        "model_note": "tiny random test model (tests/world_fixtures.py)" if args.model else "",
        "steps": args.steps, "clips": args.clips, **result,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    log.info("RSS %.1f MB after clip %d, %.1f MB after clip %d (%+.1f MB); written %s",
             result["early"]["rss_mb"], result["early"]["clip"], result["end"]["rss_mb"],
             result["end"]["clip"], result["growth_mb"], args.out)  # fmt: skip


if __name__ == "__main__":
    main()
