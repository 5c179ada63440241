"""Runnable modules from model directories: one registry of loaders, chosen by what ``config.json`` says.

A loader builds an ``nn.Module`` in eval mode, on the CPU, from a directory, or from ``tensors`` given under the
directory's file names (an in-memory merge). Built in, tried in this order: imported DAFormer / HRDA / MIC / EDAPS
checkpoints (:mod:`.mmseg_uda`), then transformers' Auto classes for everything else. Another file format adds its
own with :func:`register_loader`; entries name their function as ``"module:function"`` so that choosing a loader
imports only the one chosen.
"""

from __future__ import annotations

import contextlib
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
    LoaderEntry("transformers", lambda info: True, "layerseg_merge.models.loading:load_transformers_model"),
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


@contextlib.contextmanager
def quiet_transformers():
    """transformers' load reports (unexpected keys of an imported head, say) and its "Loading weights" progress
    bars are noise for repeated loads: both off inside, as they were after."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_transformers_model(model_dir: Path, info: ModelInfo, tensors: dict | None) -> nn.Module:
    """transformers' Auto class for the model type: universal (Mask2Former, MaskFormer, OneFormer) or semantic."""
    from transformers import AutoConfig, AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation

    auto = AutoModelForUniversalSegmentation if info.universal else AutoModelForSemanticSegmentation
    if tensors is None:
        try:
            model = auto.from_pretrained(model_dir)
        except Exception:  # a bad or unsafe weights file: the reader's own message names it
            from layerseg_merge.checkpoint import read_tensor_headers

            read_tensor_headers(model_dir)
            raise
    else:
        config = AutoConfig.from_pretrained(model_dir)
        model_class = auto._model_mapping[type(config)]  # the Auto classes take no state dict alone
        with quiet_transformers():
            model = model_class.from_pretrained(None, config=config, state_dict=tensors)
    if info.mmseg is not None:  # an imported mmseg SegFormer: its MiT's original LayerNorm eps
        from layerseg_merge.models.mmseg_uda import set_mit_layer_norm_eps

        set_mit_layer_norm_eps(model)
    return model
