"""transformers' Auto classes as a loader of :mod:`layerseg_merge.models.loading`, and quiet repeated loads."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from layerseg_merge.models.info import ModelInfo

if TYPE_CHECKING:
    from torch import nn


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
            from layerseg_merge.io.checkpoint import read_tensor_headers

            read_tensor_headers(model_dir)
            raise
    else:
        config = AutoConfig.from_pretrained(model_dir)
        model_class = auto._model_mapping[type(config)]  # the Auto classes take no state dict alone
        with quiet_transformers():
            model = model_class.from_pretrained(None, config=config, state_dict=tensors)
    return model
