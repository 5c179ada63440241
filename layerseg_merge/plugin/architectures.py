"""mergekit's view of every supported host: backbone layers, then heads.

mergekit walks a model as pre-weights, numbered layers and post-weights. We
flatten every backbone into one global layer list (so mergekit's layer ``t``
equals our depth), put all backbone tensors into those layers with the host's
own names, and list everything else as (optional) post-weights: the heads. The
same :data:`SEGMENTATION_ARCHITECTURE` object serves every host, so mergekit
accepts recipes that mix hosts sharing one backbone without ``--allow-crimes``.
"""

from __future__ import annotations

import torch
from mergekit.architecture import ModelArchitecture, ModuleArchitecture, ModuleDefinition
from mergekit.architecture.base import WeightInfo
from transformers import PretrainedConfig

from layerseg_merge.architectures import HOSTS
from layerseg_merge.architectures.layout import TensorInfo, head_aliases, layout_of_config
from layerseg_merge.plugin import compat as mergekit_compat


def _weight_info(info: TensorInfo, optional: bool) -> WeightInfo:
    # Integer buffers keep their dtype whatever the recipe's `dtype:` says; a head shared between hosts
    # (a DAFormer head inside HRDA) is looked up under each host's own name.
    force = "int64" if info.dtype == torch.int64 else None
    return mergekit_compat.weight_info(info.name, optional, force, head_aliases(info) if info.role == "head" else ())


class SegmentationModuleArchitecture(ModuleArchitecture):
    """mergekit's view of any supported host: backbone layers, then heads."""

    def num_layers_config_key(self) -> str:
        return ""  # the layer count is not a config value we may rewrite

    def num_layers(self, config: PretrainedConfig) -> int:
        return len(layout_of_config(config).layers)

    def pre_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        return []

    def layer_weights(self, index: int, config: PretrainedConfig) -> list[WeightInfo]:
        return [_weight_info(t, optional=False) for t in layout_of_config(config).layers[index]]

    def post_weights(self, config: PretrainedConfig) -> list[WeightInfo]:
        # Heads (and host-specific backbone tensors) carry the anchor's names;
        # inputs of another host simply lack them.
        return [_weight_info(t, optional=True) for t in layout_of_config(config).heads]


SEGMENTATION_ARCHITECTURE = ModelArchitecture(
    modules={"default": ModuleDefinition(architecture=SegmentationModuleArchitecture())},
    architectures=sorted(HOSTS),
    model_type="layerseg",
    tagalong_files=["preprocessor_config.json"],
)


def register_architectures() -> None:
    """Make mergekit resolve every supported host to our definition (idempotent)."""
    mergekit_compat.register_architecture(SEGMENTATION_ARCHITECTURE, HOSTS)


register_architectures()  # see layerseg_merge.register
