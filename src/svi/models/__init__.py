"""Model presets and builders: the tiny world DiT and real Wan 2.1/2.2 from local folders."""

from svi.models.presets import PRESETS, ModelPreset, get_preset

__all__ = ["PRESETS", "ModelPreset", "get_preset"]
