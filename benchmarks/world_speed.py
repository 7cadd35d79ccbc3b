"""Rendering speed of the procedural world: frames per second, median of 5 runs.

Usage: ``python benchmarks/world_speed.py [--frames 2000]``. Times ``render_episode``
(frames and full ground truth) for each kind at 32 px and 64 px.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from svi.world import KINDS, WorldConfig, render_episode

log = logging.getLogger("world_speed")


def frames_per_second(kind: str, size: int, frames: int, runs: int = 5) -> float:
    config = WorldConfig(size=size)
    times = []
    for run in range(runs):
        start = time.perf_counter()
        render_episode(kind, run, frames, config)
        times.append(time.perf_counter() - start)
    return frames / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--kinds", nargs="*", default=list(KINDS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for kind in args.kinds:
        for size in (32, 64):
            fps = frames_per_second(kind, size, args.frames)
            log.info(
                "%-10s %3d px  %9.0f frames/s  (median of 5, %d frames)",
                kind,
                size,
                fps,
                args.frames,
            )


if __name__ == "__main__":
    main()
