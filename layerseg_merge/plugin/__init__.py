"""Everything that imports mergekit: the `layerwise_seg` kernel and its spec (method), what mergekit planned
(planning), the vision architectures as mergekit sees them, strict recipe checks on mergekit's configuration, and
the compat layer: every runtime change of mergekit, each detected on its own and naming the upstream patch that
retires it.
"""


def register() -> None:
    """Register everything with mergekit (idempotent; imports mergekit).

    Each glue module also registers itself when its import completes: when the import
    of one of them is what loads mergekit, this runs while that module is half-initialised.
    """
    from importlib import import_module

    for name, function in (("layerseg_merge.plugin.method", "register_method"),
                           ("layerseg_merge.plugin.architectures", "register_architectures")):
        module = import_module(name)
        if hasattr(module, function):  # else it is still being imported and registers at its end
            getattr(module, function)()
