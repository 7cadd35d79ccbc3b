"""Train/val/test partition of episode seeds.

Rule: ``bucket = int.from_bytes(blake2b(str(seed).encode(), digest_size=8).digest(),
"little") % 100``; buckets 0-79 are ``train``, 80-89 ``val``, 90-99 ``test``. The
split depends only on the seed (not on the kind or the frame size), so the same
seed is held out for every kind.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from svi.errors import SviError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def seed_bucket(seed: int) -> int:
    """The seed's hash bucket in 0..99."""
    digest = hashlib.blake2b(str(int(seed)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 100


def split_of(seed: int) -> Split:
    """Which split a seed belongs to (80 % train, 10 % val, 10 % test)."""
    bucket = seed_bucket(seed)
    return "train" if bucket < 80 else "val" if bucket < 90 else "test"


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """The first ``n`` seeds >= ``start`` that belong to ``split``."""
    if split not in SPLITS:
        raise SviError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if n < 0 or start < 0:
        raise SviError(f"split_seeds needs n >= 0 and start >= 0, got n={n}, start={start}")
    seeds: list[int] = []
    seed = start
    while len(seeds) < n:
        if split_of(seed) == split:
            seeds.append(seed)
        seed += 1
    return seeds
