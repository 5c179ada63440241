"""Old module paths of the package, kept working with a DeprecationWarning (the house moved into layers).

``import layerseg_merge.method`` (or ``from layerseg_merge.schedule import ...``) gives the module at its new
place, :data:`MOVED`, and warns once; nothing else changes. The finder is installed by the package's
``__init__`` and imports nothing until an old path is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED = {
    "layerseg_merge.checkpoint": "layerseg_merge.io.checkpoint",
    "layerseg_merge.hub": "layerseg_merge.io.hub",
    "layerseg_merge.output": "layerseg_merge.io.output",
    "layerseg_merge.errors": "layerseg_merge.io.errors",
    "layerseg_merge.card": "layerseg_merge.models.card",
    "layerseg_merge.schedule": "layerseg_merge.engine.schedule",
    "layerseg_merge.tensor_plan": "layerseg_merge.engine.plan",
    "layerseg_merge.tensor_merge": "layerseg_merge.engine.arithmetic",
    "layerseg_merge.recipe_yaml": "layerseg_merge.engine.recipe_yaml",
    "layerseg_merge.tools.in_memory": "layerseg_merge.engine.in_memory",
    "layerseg_merge.method": "layerseg_merge.plugin.method",
    "layerseg_merge.mergekit_compat": "layerseg_merge.plugin.compat",
    "layerseg_merge.recipe": "layerseg_merge.plugin.recipe",
    "layerseg_merge.architectures.mergekit_glue": "layerseg_merge.plugin.architectures",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new place."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, cls) if name in MOVED else None

    @classmethod
    def create_module(cls, spec):
        return None

    @classmethod
    def exec_module(cls, module) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; import it from there (the old path will go)",
                      DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)  # the import returns this module


def install() -> None:
    if _MovedModules not in sys.meta_path:
        sys.meta_path.append(_MovedModules)
