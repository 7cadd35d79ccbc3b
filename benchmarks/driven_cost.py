"""Cost per clip of driven generation (issue 13): the shipped Talk / Dance adapters vs the
unconditioned default LoRA on the embedded model.

Usage: ``.venv/bin/python benchmarks/driven_cost.py [--clips 8] [--runs 5] [--out FILE]``

Every measurement generates ``--clips`` clips in this process (model loaded and warmed up
before timing, one thread, so the rows share one core budget); rows are interleaved run
by run and reported as the median seconds per clip and the ratio to the unconditioned
row. Rows: ``plain`` (the default ERFT LoRA, no drive), ``talk`` (the talk adapter driven
by a test talking scene's audio), ``talk-cfg5`` (the same with audio guidance 5: three
DiT passes per step, the released Talk setting on Wan), ``dance`` (the dance adapter
driven by a test dancing scene's pose video). The paper's claim is "no additional
inference cost"; the target here is within 1.1x.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from svi.conditions.audio import audio_features
from svi.conditions.drive import AudioDrive, PoseDrive
from svi.pipeline import SVIPipeline
from svi.plan import GenerationConfig
from svi.world import WorldConfig, render_episode, split_seeds
from svi.world.config import SAMPLE_RATE

log = logging.getLogger("driven_cost")


def _pipeline(lora: str) -> SVIPipeline:
    pipe = SVIPipeline.from_pretrained()
    pipe.load_lora(lora)
    return pipe


def rows(clips: int) -> dict:
    """name -> (pipeline, start, prompts, drive) for every row."""
    frames = clips * 3 + 2
    talk = render_episode("talking", split_seeds("test", 1)[0], frames, WorldConfig())
    dance = render_episode("dancing", split_seeds("test", 1)[0], frames, WorldConfig())
    feats = audio_features(talk.audio, SAMPLE_RATE, talk.config.fps, num_frames=frames)
    plain = render_episode("consistent", split_seeds("test", 1)[0], frames, WorldConfig())
    talk_pipe = _pipeline("talk")
    return {
        "plain": (_pipeline("svi"), plain.frames[:2], plain.prompts, None),
        "talk": (talk_pipe, talk.frames[:2], talk.prompts, AudioDrive(feats, 1)),
        "talk-cfg5": (talk_pipe, talk.frames[:2], talk.prompts, AudioDrive(feats, 1, 5.0)),
        "dance": (_pipeline("dance"), dance.frames[:2], dance.prompts,
                  PoseDrive(dance.pose_frames, 1)),
    }  # fmt: skip


def seconds_per_clip(row: tuple, clips: int) -> float:
    pipe, start, prompts, drive = row
    config = GenerationConfig(clips=clips, seed=0)
    t0 = time.perf_counter()
    for _ in pipe.generate(start, prompts, config, drive=drive):
        pass
    return (time.perf_counter() - t0) / clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/driven_cost.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    table = rows(args.clips)
    for row in table.values():  # warm-up: first-call allocations and lazy imports
        seconds_per_clip(row, 1)
    times: dict[str, list[float]] = {name: [] for name in table}
    for run in range(args.runs):
        for name, row in table.items():
            times[name].append(seconds_per_clip(row, args.clips))
        log.info("run %d: %s", run + 1, {k: round(v[-1], 4) for k, v in times.items()})
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": f"benchmarks/driven_cost.py --clips {args.clips} --runs {args.runs}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1},
        "seconds_per_clip": times,
        "median_seconds_per_clip": median,
        "ratio_to_plain": {k: v / median["plain"] for k, v in median.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    log.info("| row | s / clip (median of %d) | vs plain |", args.runs)
    log.info("|---|---|---|")
    for k, v in median.items():
        log.info("| %s | %.4f | %.2fx |", k, v, result["ratio_to_plain"][k])


if __name__ == "__main__":
    main()
