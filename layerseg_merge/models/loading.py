"""Runnable modules from model directories: one registry of loaders, chosen by what ``config.json`` says.

A loader builds an ``nn.Module`` in eval mode, on the CPU, from a directory, or from ``tensors`` given under the
directory's file names (an in-memory merge). Built in, tried in this order: imported DAFormer / HRDA / MIC / EDAPS
checkpoints and imported NVlabs SegFormers (:mod:`.mmseg_uda`), then transformers' Auto classes for everything
else (:mod:`.transformers_loader`). Another file format adds its
own with :func:`register_loader`; entries name their function as ``"module:function"`` so that choosing a loader
imports only the one chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerseg_merge.models.info import ModelInfo

if TYPE_CHECKING:
    from torch import nn

Loader = Callable[[Path, ModelInfo, "dict | None"], "nn.Module"]


@dataclass(frozen=True)
class LoaderEntry:
    name: str
    applies: Callable[[ModelInfo], bool]
    load: str | Loader  # "module:function", imported when chosen

    def loader(self) -> Loader:
        if callable(self.load):
            return self.load
        module, function = self.load.split(":")
        return getattr(importlib.import_module(module), function)


LOADERS: list[LoaderEntry] = [
    LoaderEntry("mmseg_uda", lambda info: info.imported_heads, "layerseg_merge.models.mmseg_uda:load_mmseg_model"),
    LoaderEntry("mmseg_segformer", lambda info: info.mmseg is not None,
                "layerseg_merge.models.mmseg_uda:load_mmseg_segformer"),
    LoaderEntry("transformers", lambda info: True, "layerseg_merge.models.transformers_loader:load_transformers_model"),
]


def register_loader(name: str, applies: Callable[[ModelInfo], bool], load: str | Loader) -> None:
    """Add a loader tried before the built-in ones (the newest first); a name given twice is an error."""
    if any(entry.name == name for entry in LOADERS):
        raise ValueError(f"a model loader named {name!r} is already registered")
    LOADERS.insert(0, LoaderEntry(name, applies, load))


def loader_for(info: ModelInfo) -> LoaderEntry:
    """The one decision of which loader runs a model directory."""
    return next(entry for entry in LOADERS if entry.applies(info))


def load_model(model_dir: str | Path, tensors: dict | None = None, info: ModelInfo | None = None) -> nn.Module:
    """The runnable model of ``model_dir`` in eval mode; ``tensors`` replaces the directory's weights."""
    info = info or ModelInfo.from_dir(model_dir)
    return loader_for(info).loader()(Path(model_dir), info, tensors).eval()
