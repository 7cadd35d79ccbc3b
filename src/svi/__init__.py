"""svi: Stable Video Infinity - any-length video with Error-Recycling Fine-Tuning.

The heavy pieces (torch, diffusers) load on first use of ``SVIPipeline`` /
``GenerationConfig``, so ``import svi`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from svi.errors import SviError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from svi.pipeline import GenerationConfig, SVIPipeline

__all__ = ["GenerationConfig", "SVIPipeline", "SviError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("SVIPipeline", "GenerationConfig"):
        from svi import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'svi' has no attribute {name!r}")
