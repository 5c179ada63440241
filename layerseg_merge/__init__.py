"""layerseg-merge: layer-wise, anchor-based merging of segmentation models for mergekit.

``import layerseg_merge`` is cheap: the ``layerwise_seg`` merge method and the vision
architecture definitions are registered with mergekit when mergekit is imported
(at once if it already is), so ``import layerseg_merge`` followed by mergekit's
Python API just works.
"""

from layerseg_merge import _moved
from layerseg_merge.engine.schedule import coefficients
from layerseg_merge.engine.settings import METHOD_NAME, ScheduleSettings
from layerseg_merge.plugin import register

_moved.install()  # old module paths (layerseg_merge.method, ...) keep working, with a DeprecationWarning

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "layerwise_seg":  # the mergekit method object: needs mergekit
        from layerseg_merge.plugin.method import layerwise_seg

        return layerwise_seg
    if name in ("merge", "merge_in_memory"):  # need mergekit and torch: imported on first use
        from layerseg_merge import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:
    from _layerseg_merge_hook import when_mergekit_loads
except ImportError:  # the start-up hook module is not installed: register eagerly
    register()
else:
    when_mergekit_loads(register)

__all__ = ["METHOD_NAME", "ScheduleSettings", "coefficients", "layerwise_seg", "merge", "merge_in_memory", "register"]
