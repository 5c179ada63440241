"""SegFormer / Mix Transformer (MiT): 4 stages of ``depths[s]`` blocks.

Names follow what transformers writes to disk (``encoder.block.{s}.{b}``), which
is also what mergekit reads. Patch embeddings take the depth of the first block
of their stage, stage norms the depth of the last one.
"""

from layerseg_merge.architectures.base import BackboneFamily, Host, Rule, stage_offsets


def _first(match, config) -> int:
    return stage_offsets(config.depths)[int(match[1])]


def _block(match, config) -> int:
    return stage_offsets(config.depths)[int(match[1])] + int(match[2])


def _last(match, config) -> int:
    stage = int(match[1])
    return stage_offsets(config.depths)[stage] + config.depths[stage] - 1


SEGFORMER = BackboneFamily(
    name="segformer",
    model_types=("segformer",),
    num_layers=lambda config: sum(config.depths),
    rules=(
        Rule(r"patch_embeddings\.(\d+)\..+", _first),
        Rule(r"block\.(\d+)\.(\d+)\..+", _block),
        Rule(r"layer_norm\.(\d+)\..+", _last),
    ),
    signature_keys=("num_channels", "num_encoder_blocks", "depths", "sr_ratios", "hidden_sizes",
                    "patch_sizes", "strides", "num_attention_heads", "mlp_ratios"),
)

HOSTS = (
    Host("SegformerForSemanticSegmentation", prefix="segformer.encoder.", backbone="segformer"),
    Host("SegformerForImageClassification", prefix="segformer.encoder.", backbone="segformer"),
    Host("SegformerModel", prefix="encoder.", backbone="segformer"),
)
