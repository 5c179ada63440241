"""Vision segmentation architectures: backbone families and the hosts that carry them.

Importing this package needs neither mergekit nor transformers (``layerseg
architectures`` stays fast); the layout functions load on first use, and the
mergekit view of these definitions lives in :mod:`layerseg_merge.plugin.architectures`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerseg_merge.architectures.base import BackboneFamily, Host
from layerseg_merge.architectures.registry import FAMILIES, HOSTS

_LAYOUT_NAMES = ("IncompatibleModels", "ModelLayout", "TensorInfo", "UnsupportedArchitecture", "check_compatible",
                 "layout_of", "layout_of_config", "supported_architectures")

if TYPE_CHECKING:
    from layerseg_merge.architectures.layout import (
        IncompatibleModels,
        ModelLayout,
        TensorInfo,
        UnsupportedArchitecture,
        check_compatible,
        layout_of,
        layout_of_config,
        supported_architectures,
    )


def __getattr__(name: str):
    if name in _LAYOUT_NAMES:  # loaded on first use: layouts need torch
        from layerseg_merge.architectures import layout

        return getattr(layout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FAMILIES", "HOSTS", "BackboneFamily", "Host", "IncompatibleModels", "ModelLayout", "TensorInfo",
           "UnsupportedArchitecture", "check_compatible", "layout_of", "layout_of_config", "supported_architectures"]
