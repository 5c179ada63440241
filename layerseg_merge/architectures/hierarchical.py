"""Hierarchical backbones with ``depths`` per stage: Swin (and MaskFormer's fork) and ConvNeXt.

Stem = layer 0. Patch merging / downsampling opens the next stage, so it takes
the depth of that stage's first block; per-stage output norms
(``hidden_states_norms.stageK``) take the depth of the last block of stage K.
"""

import re

from layerseg_merge.architectures.base import (
    BackboneFamily,
    Host,
    Rule,
    block_layer,
    nested_backbone_config,
    stage_first_layer,
    stage_last_layer,
    total_blocks,
)


def _stem(match, config) -> int:
    return 0


def _last(match, config) -> int:
    return total_blocks(config) - 1


def _next_stage_first(match, config) -> int:
    return stage_first_layer(match, config, shift=1)


def _stage_output(match, config) -> int:
    return stage_last_layer(match, config, shift=-1)  # stage1 is the output of stage index 0


_OUTPUT_NORMS = r"hidden_states_norms\.stage\d+\..+"
_FINAL_NORM = r"layernorm\..+"

SWIN = BackboneFamily(
    name="swin",
    model_types=("swin", "maskformer-swin"),
    num_layers=total_blocks,
    rules=(
        Rule(r"embeddings\..+", _stem),
        Rule(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\..+", block_layer),
        # layers.{s}.downsample merges stage s's output into stage s + 1's input.
        Rule(r"encoder\.layers\.(\d+)\.downsample\..+", _next_stage_first),
        Rule(r"hidden_states_norms\.stage(\d+)\..+", _stage_output),
        Rule(_FINAL_NORM, _last),
    ),
    signature_keys=("image_size", "patch_size", "num_channels", "embed_dim", "depths", "num_heads",
                    "window_size", "mlp_ratio", "qkv_bias", "use_absolute_embeddings"),
    host_specific=(_OUTPUT_NORMS, _FINAL_NORM, r".+\.relative_position_index"),
)

CONVNEXT = BackboneFamily(
    name="convnext",
    model_types=("convnext",),
    num_layers=total_blocks,
    rules=(
        Rule(r"embeddings\..+", _stem),
        Rule(r"encoder\.stages\.(\d+)\.downsampling_layer\..+", stage_first_layer),
        Rule(r"encoder\.stages\.(\d+)\.layers\.(\d+)\..+", block_layer),
        Rule(r"hidden_states_norms\.stage(\d+)\..+", _stage_output),
        Rule(_FINAL_NORM, _last),
    ),
    signature_keys=("num_channels", "patch_size", "num_stages", "hidden_sizes", "depths",
                    "layer_scale_init_value"),
    host_specific=(_OUTPUT_NORMS, _FINAL_NORM),
)


def maskformer_swin_canonical(name: str) -> str:
    """MaskFormer's Swin fork: blocks under ``model.``, output norms numbered from 0."""
    if match := re.fullmatch(r"hidden_states_norms\.(\d+)\.(.+)", name):
        return f"hidden_states_norms.stage{int(match[1]) + 1}.{match[2]}"
    return name.removeprefix("model.")


HOSTS = (
    Host("UperNetForSemanticSegmentation", prefix="backbone.", backbone_config=nested_backbone_config),
    Host("Mask2FormerForUniversalSegmentation", prefix="model.pixel_level_module.encoder.",
         backbone_config=nested_backbone_config),
    Host("OneFormerForUniversalSegmentation", prefix="model.pixel_level_module.encoder.",
         backbone_config=nested_backbone_config),
    Host("MaskFormerForInstanceSegmentation", prefix="model.pixel_level_module.encoder.",
         backbone_config=nested_backbone_config, canonical=maskformer_swin_canonical),
    Host("ConvNextForImageClassification", prefix="convnext.", backbone="convnext"),
    Host("ConvNextModel", prefix="", backbone="convnext"),
)
