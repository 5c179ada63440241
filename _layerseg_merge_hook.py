"""Start-up hook (loaded by layerseg_merge_hook.pth): register layerseg-merge with mergekit.

Nothing is imported at start-up: a one-shot finder wraps mergekit's loader and, right
after ``mergekit`` finishes loading, runs the callbacks given to
:func:`when_mergekit_loads`. The hook's own callback imports ``layerseg_merge``,
whose ``__init__`` registers the plugin. ``import layerseg_merge`` uses the same
function, so registration is lazy with or without this hook. Set
LAYERSEG_MERGE_NO_HOOK=1 to disable the hook. A mergekit with the ``mergekit.plugins`` entry-point group
(upstream/, patch 0007) loads the plugin through :func:`mergekit_plugin` instead, and the hook steps aside.
"""

import os
import sys


class _AfterMergekit:
    callbacks: list = []

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
            for callback in cls.callbacks:
                try:
                    callback()
                except Exception as error:  # a broken plugin must not break mergekit
                    sys.stderr.write(f"layerseg-merge: not registered with mergekit ({error})\n")

        spec.loader.exec_module = exec_module
        return spec


def when_mergekit_loads(callback) -> None:
    """Run ``callback`` once mergekit has been imported (at once if it already is)."""
    if "mergekit" in sys.modules:
        callback()
        return
    if callback not in _AfterMergekit.callbacks:
        _AfterMergekit.callbacks.append(callback)
    if _AfterMergekit not in sys.meta_path:
        sys.meta_path.insert(0, _AfterMergekit)


def _entry_point_installed() -> bool:
    """mergekit loads plugins itself (upstream patch 0007) and ours is declared: nothing for the hook to do."""
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    return find_spec("mergekit.plugins") is not None and bool(
        entry_points(group="mergekit.plugins", name="layerseg_merge"))


def _import_layerseg_merge() -> None:
    if _entry_point_installed():
        return
    import layerseg_merge  # noqa: F401  (registers once mergekit is loaded)


def mergekit_plugin() -> None:
    """The ``mergekit.plugins`` entry point (for a mergekit that loads plugins); LAYERSEG_MERGE_NO_HOOK=1
    turns it off like the hook."""
    if not os.environ.get("LAYERSEG_MERGE_NO_HOOK"):
        import layerseg_merge

        layerseg_merge.register()


if not os.environ.get("LAYERSEG_MERGE_NO_HOOK"):
    when_mergekit_loads(_import_layerseg_merge)
