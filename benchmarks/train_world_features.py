"""Train the world-feature encoder and write the shipped files.

Usage (about 7 minutes on one shared CPU core)::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_world_features.py --steps 1600

Renders frames of TRAIN-split seeds (consistent + creative kinds), trains the
multi-task encoder of :mod:`svi.bench.feature_training`, validates on VAL seeds and
writes ``encoder.safetensors`` + ``encoder.json`` (with this command, the val
figures and the sanity figures) to ``src/svi/assets/world-features/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import torch

from svi.bench.feature_training import train_feature_encoder

log = logging.getLogger("train_world_features")
OUT_DIR = Path(__file__).resolve().parent.parent / "src" / "svi" / "assets" / "world-features"


def command_line() -> str:
    """The command as typed, with the thread settings that shape the run."""
    env = [f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY",) if k in os.environ]
    return shlex.join([*env, "python", *sys.argv])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-episodes", type=int, default=1200)
    parser.add_argument("--val-episodes", type=int, default=160)
    parser.add_argument("--sanity-episodes", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    info = train_feature_encoder(
        args.out,
        args.steps,
        args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        train_episodes=args.train_episodes,
        val_episodes=args.val_episodes,
        sanity_episodes=args.sanity_episodes,
        command=command_line(),
    )
    log.info("val: %s", json.dumps(info["val"]["heads"], indent=1))
    log.info("sanity: %s", json.dumps(info["sanity"], indent=1))


if __name__ == "__main__":
    main()
