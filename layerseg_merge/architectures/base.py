"""The data that describes a vision segmentation architecture.

A *backbone family* says how a backbone's hierarchical blocks flatten into one
ordered list of layers (from its config alone). A *host* says where that
backbone sits inside a transformers model class. Everything in a checkpoint that
is not backbone is a head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import PretrainedConfig

LayerNames = list[list[str]]


def own_config(config: PretrainedConfig) -> PretrainedConfig:
    """The backbone is the model itself (SegFormer, ViT, ConvNeXt classifiers)."""
    return config


def nested_backbone_config(config: PretrainedConfig) -> PretrainedConfig:
    """The backbone is described by ``config.backbone_config`` (UperNet, Mask2Former)."""
    backbone = getattr(config, "backbone_config", None)
    if backbone is None:
        raise ValueError(
            f"{config.architectures[0]} config has no backbone_config; "
            "layerseg-merge needs an explicit backbone_config in config.json"
        )
    return backbone


@dataclass(frozen=True)
class BackboneFamily:
    """How one backbone family flattens into layers.

    ``layers(config)`` returns, per global layer index in forward order, the
    canonical tensor names (relative to the backbone's root module) of that
    layer. ``signature_keys`` are the config fields that must agree for two
    backbones to be merged.
    """

    name: str
    model_types: tuple[str, ...]
    layers: Callable[[PretrainedConfig], LayerNames]
    signature_keys: tuple[str, ...]

    def signature(self, config: PretrainedConfig) -> dict[str, Any]:
        return {key: getattr(config, key, None) for key in self.signature_keys}


@dataclass(frozen=True)
class Host:
    """Where a backbone sits inside one transformers architecture.

    ``to_host`` turns a canonical backbone name into the name this host's own
    backbone module uses (hosts with a forked backbone rename a few tensors);
    ``optional`` lists canonical names that this host may lack.
    """

    architecture: str
    prefix: str
    backbone_config: Callable[[PretrainedConfig], PretrainedConfig] = own_config
    to_host: Callable[[str], str] = field(default=lambda name: name)
    optional: Callable[[str], bool] = field(default=lambda name: False)
