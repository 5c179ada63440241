"""The data that describes a vision segmentation architecture.

A *backbone family* places every tensor of a backbone on one global, ordered
list of layers (hierarchical stages flattened in forward order), from the
backbone's config. A *host* says where that backbone sits inside a transformers
model class. Everything in a checkpoint that is not backbone is a head.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig


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


def stage_offsets(depths: Sequence[int]) -> list[int]:
    """Global index of the first block of each stage."""
    offsets, total = [], 0
    for depth in depths:
        offsets.append(total)
        total += depth
    return offsets


def total_blocks(config: PretrainedConfig) -> int:
    """Number of layers of a backbone made of stages of ``config.depths`` blocks."""
    return sum(config.depths)


def block_layer(match: re.Match, config: PretrainedConfig) -> int:
    """Layer of block ``match[2]`` of stage ``match[1]``."""
    return stage_offsets(config.depths)[int(match[1])] + int(match[2])


def stage_first_layer(match: re.Match, config: PretrainedConfig, shift: int = 0) -> int:
    """Layer of the first block of stage ``match[1] + shift``."""
    return stage_offsets(config.depths)[int(match[1]) + shift]


def stage_last_layer(match: re.Match, config: PretrainedConfig, shift: int = 0) -> int:
    """Layer of the last block of stage ``match[1] + shift``."""
    stage = int(match[1]) + shift
    return stage_offsets(config.depths)[stage] + config.depths[stage] - 1


@dataclass(frozen=True)
class Rule:
    """One placement rule: a regex over canonical names and the layer it maps a match to."""

    pattern: str
    layer: Callable[[re.Match, PretrainedConfig], int]


@dataclass(frozen=True)
class BackboneFamily:
    """How one backbone family places its tensors on layers.

    ``rules`` are tried in order on a tensor's canonical name (relative to the
    backbone's root); the first match gives its layer. Names no rule matches are
    not backbone (they are heads or extras). ``host_specific`` marks placed
    tensors that only some hosts have (per-stage output norms, a final norm):
    they keep their depth but merge only among inputs of the anchor's host.
    ``signature_keys`` are the config fields that must agree across models.
    """

    name: str
    model_types: tuple[str, ...]
    num_layers: Callable[[PretrainedConfig], int]
    rules: tuple[Rule, ...]
    signature_keys: tuple[str, ...]
    host_specific: tuple[str, ...] = ()
    _compiled: tuple[tuple[re.Pattern, Rule], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple((re.compile(r.pattern), r) for r in self.rules))

    def layer_of(self, canonical: str, config: PretrainedConfig) -> int | None:
        for pattern, rule in self._compiled:
            if match := pattern.fullmatch(canonical):
                return rule.layer(match, config)
        return None

    def is_host_specific(self, canonical: str) -> bool:
        return any(re.fullmatch(p, canonical) for p in self.host_specific)

    def signature(self, config: PretrainedConfig) -> dict[str, Any]:
        return {key: getattr(config, key, None) for key in self.signature_keys}


def identity(name: str) -> str:
    return name


@dataclass(frozen=True)
class Host:
    """Where a backbone sits inside one transformers architecture.

    ``canonical`` turns a name inside the host's backbone module into the
    family's canonical name (hosts with a forked backbone rename a few tensors);
    ``shared_heads`` does the same for heads that several hosts carry under
    different names (a DAFormer head inside HRDA's ``decode_head.head.``).
    """

    architecture: str
    prefix: str
    backbone: str | None = None  # the family name; None: read from backbone_config.model_type
    backbone_config: Callable[[PretrainedConfig], PretrainedConfig] = own_config
    canonical: Callable[[str], str] = identity
    # Heads shared with other hosts: (name prefix here, canonical prefix). A head tensor lines up with the
    # tensor of another host that has the same canonical name; other heads line up within their host only.
    shared_heads: tuple[tuple[str, str], ...] = ()

    def head_canonical(self, name: str) -> str:
        for here, canonical in self.shared_heads:
            if name.startswith(here):
                return canonical + name[len(here):]
        return f"{self.architecture}:{name}"
