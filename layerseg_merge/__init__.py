"""layerseg-merge: layer-wise, anchor-based merging of segmentation models for mergekit.

``import layerseg_merge`` is cheap: the ``layerwise_seg`` merge method and the vision
architecture definitions are registered with mergekit when mergekit is imported
(at once if it already is), so ``import layerseg_merge`` followed by mergekit's
Python API just works.
"""

from layerseg_merge.schedule import ScheduleSettings, coefficients

__version__ = "0.1.0"
METHOD_NAME = "layerwise_seg"


def register() -> None:
    """Register everything with mergekit (idempotent; imports mergekit).

    Each glue module also registers itself when its import completes: when the import
    of one of them is what loads mergekit, this runs while that module is half-initialised.
    """
    from importlib import import_module

    for name, function in (("layerseg_merge.method", "register_method"),
                           ("layerseg_merge.architectures.mergekit_glue", "register_architectures")):
        module = import_module(name)
        if hasattr(module, function):  # else it is still being imported and registers at its end
            getattr(module, function)()


def __getattr__(name: str):
    if name == "layerwise_seg":  # the mergekit method object: needs mergekit
        from layerseg_merge.method import layerwise_seg

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
