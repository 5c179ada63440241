"""SegFormer / Mix Transformer (MiT): 4 stages of ``depths[s]`` blocks.

Names follow what transformers writes to disk (``encoder.block.{s}.{b}``), which
is also what mergekit reads. Patch embeddings take the depth of the first block
of their stage, stage norms the depth of the last one. Blocks of stages with
``sr_ratio == 1`` have no spatial-reduction ``sr``/``layer_norm`` tensors.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from layerseg_merge.architectures.base import BackboneFamily, Host, LayerNames

_BLOCK = (
    "layer_norm_1",
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "layer_norm_2",
    "mlp.dense1",
    "mlp.dwconv.dwconv",
    "mlp.dense2",
)
_SPATIAL_REDUCTION = ("attention.self.sr", "attention.self.layer_norm")


def _affine(module: str) -> list[str]:
    return [f"{module}.weight", f"{module}.bias"]


def segformer_layers(config: PretrainedConfig) -> LayerNames:
    layers: LayerNames = []
    for stage, depth in enumerate(config.depths):
        for block in range(depth):
            names: list[str] = []
            if block == 0:
                names += _affine(f"patch_embeddings.{stage}.proj")
                names += _affine(f"patch_embeddings.{stage}.layer_norm")
            modules = _BLOCK
            if config.sr_ratios[stage] > 1:
                modules = modules[:4] + _SPATIAL_REDUCTION + modules[4:]
            for module in modules:
                names += _affine(f"block.{stage}.{block}.{module}")
            if block == depth - 1:
                names += _affine(f"layer_norm.{stage}")
            layers.append(names)
    return layers


SEGFORMER = BackboneFamily(
    name="segformer",
    model_types=("segformer",),
    layers=segformer_layers,
    signature_keys=(
        "num_channels",
        "num_encoder_blocks",
        "depths",
        "sr_ratios",
        "hidden_sizes",
        "patch_sizes",
        "strides",
        "num_attention_heads",
        "mlp_ratios",
    ),
)

HOSTS = (
    Host("SegformerForSemanticSegmentation", prefix="segformer.encoder."),
    Host("SegformerForImageClassification", prefix="segformer.encoder."),
    Host("SegformerModel", prefix="encoder."),
)
