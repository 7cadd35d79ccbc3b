"""The README's demo sheet: every Nth frame of a video as one PNG grid.

Usage (the README figure)::

    svi generate --out out/demo.mp4 --overwrite          # = make demo
    .venv/bin/python benchmarks/demo_sheet.py out/demo.mp4  # -> docs/figures/demo_rollout.png
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from svi.video import read_video

log = logging.getLogger("demo_sheet")


def sheet(frames: np.ndarray, every: int, columns: int, scale: int) -> Image.Image:
    """Frames 0, every, 2 every, ... in rows of ``columns``, each upscaled ``scale``x."""
    picked = frames[::every]
    rows = -(-len(picked) // columns)
    h, w = frames.shape[1:3]
    canvas = np.full((rows * (h + 1), columns * (w + 1), 3), 255, np.uint8)
    for i, frame in enumerate(picked):
        r, c = divmod(i, columns)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = frame
    image = Image.fromarray(canvas)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--every", type=int, default=16)
    parser.add_argument("--columns", type=int, default=12)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/demo_rollout.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frames = read_video(args.video)
    sheet(frames, args.every, args.columns, args.scale).save(args.out)
    log.info("%s: %d frames, every %d -> %s", args.video, len(frames), args.every, args.out)


if __name__ == "__main__":
    main()
