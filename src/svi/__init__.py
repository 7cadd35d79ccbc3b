"""svi: Stable Video Infinity - any-length video with Error-Recycling Fine-Tuning."""

from __future__ import annotations

__version__ = "0.1.0"

from svi.errors import SviError

__all__ = ["SviError", "__version__"]
