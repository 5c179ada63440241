"""layerseg-merge: layer-wise, anchor-based merging of segmentation models for mergekit.

Importing this package registers the ``layerwise_seg`` merge method and the
vision architecture definitions with mergekit.
"""

from layerseg_merge.architectures import register_architectures
from layerseg_merge.method import METHOD_NAME, layerwise_seg, register_method
from layerseg_merge.schedule import ScheduleSettings, coefficients

__version__ = "0.1.0"


def register() -> None:
    """Register everything with mergekit (idempotent)."""
    register_method()
    register_architectures()


register()

__all__ = ["METHOD_NAME", "ScheduleSettings", "coefficients", "layerwise_seg", "register"]
