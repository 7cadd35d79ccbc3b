"""Fast fingerprints of weight files and model folders, for manifests and caches.

A full sha256 of a 28 GB Wan folder takes minutes; a fingerprint hashes each file's
name, size, first and last MiB (a safetensors header - tensor names, shapes, offsets -
is at the start), which changes with any re-save, re-train or truncation in practice.
Small files (up to 2 MiB, e.g. every LoRA of the embedded model) are hashed whole.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

CHUNK = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".json")


# sha256 of files already read by this process, keyed by what a rewrite changes (inode,
# size, modification and change times in ns). As in git's racy-index rule, a file touched
# in the last SETTLED_NS is never remembered: timestamps are coarse (a few ms), and two
# writes within one tick would otherwise share a key.
_DIGESTS: dict[tuple, str] = {}
SETTLED_NS = 2_000_000_000


def sha256_file(path: str | Path) -> str:
    """Full sha256 hex digest of one file, read in 1 MiB chunks (once per process while
    the file stays unchanged)."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
        after = os.fstat(f.fileno())  # unchanged while it was read
    settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLED_NS
    same = (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == key[1:]
    if settled and same:
        _DIGESTS[key] = h.hexdigest()
    return h.hexdigest()


def fingerprint_files(paths: list[Path], length: int = 16, *, whole: bool = False) -> str:
    """Hex digest over the files' names, sizes and head/tail bytes (sorted by path);
    ``whole=True`` hashes every byte (cache keys, where a sampled hash could go stale)."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\0".encode())
        if whole:
            h.update(sha256_file(path).encode())
            continue
        with path.open("rb") as f:
            if size <= 2 * CHUNK:
                h.update(f.read())
            else:
                h.update(f.read(CHUNK))
                f.seek(size - CHUNK)
                h.update(f.read(CHUNK))
    return h.hexdigest()[:length]


def fingerprint_model(source: str | Path) -> str:
    """Fingerprint of a model folder's weight and config files (a file: itself)."""
    root = Path(source)
    if root.is_file():
        return fingerprint_files([root])
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    return fingerprint_files(files)


def code_commit() -> str:
    """The git commit of the checkout this code runs from, ``+dirty`` where ``src`` has
    uncommitted changes; ``unknown`` outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")
