"""Start-up hook (loaded by layerseg_merge_hook.pth): register layerseg-merge with mergekit.

Nothing is imported until mergekit itself is: a one-shot finder wraps
mergekit's loader and imports ``layerseg_merge`` right after ``mergekit``
finishes loading. Set LAYERSEG_MERGE_NO_HOOK=1 to disable.
"""

import os
import sys


class _RegisterAfterMergekit:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "mergekit":
            return None
        sys.meta_path.remove(cls)
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            try:
                import layerseg_merge  # noqa: F401  (registers on import)
            except ImportError as error:  # a broken install must not break mergekit
                sys.stderr.write(f"layerseg-merge: not registered with mergekit ({error})\n")

        spec.loader.exec_module = exec_module
        return spec


if not os.environ.get("LAYERSEG_MERGE_NO_HOOK") and "mergekit" not in sys.modules:
    sys.meta_path.insert(0, _RegisterAfterMergekit)
