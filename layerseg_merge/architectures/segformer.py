"""SegFormer / Mix Transformer (MiT): 4 stages of ``depths[s]`` blocks.

Names follow what transformers writes to disk (``encoder.block.{s}.{b}``), which
is also what mergekit reads. Patch embeddings take the depth of the first block
of their stage, stage norms the depth of the last one.
"""

from layerseg_merge.architectures.base import (
    BackboneFamily,
    Host,
    Rule,
    block_layer,
    stage_first_layer,
    stage_last_layer,
    total_blocks,
)

SEGFORMER = BackboneFamily(
    name="segformer",
    model_types=("segformer",),
    num_layers=total_blocks,
    rules=(
        Rule(r"patch_embeddings\.(\d+)\..+", stage_first_layer),
        Rule(r"block\.(\d+)\.(\d+)\..+", block_layer),
        Rule(r"layer_norm\.(\d+)\..+", stage_last_layer),
    ),
    signature_keys=("num_channels", "num_encoder_blocks", "depths", "sr_ratios", "hidden_sizes",
                    "patch_sizes", "strides", "num_attention_heads", "mlp_ratios"),
)

# mmsegmentation UDA models imported by `layerseg import mmseg` (formats/mmseg.py): the MiT backbone
# under transformers' names, the heads under their mmseg names. DAFormer's head is also HRDA's
# `decode_head.head` and EDAPS's semantic `decode_head`, so those line up across the three.
DAFORMER_HEAD = "daformer_head."

HOSTS = (
    Host("SegformerForSemanticSegmentation", prefix="segformer.encoder.", backbone="segformer"),
    Host("SegformerForImageClassification", prefix="segformer.encoder.", backbone="segformer"),
    Host("SegformerModel", prefix="encoder.", backbone="segformer"),
    Host("DAFormerForSemanticSegmentation", prefix="segformer.encoder.", backbone="segformer",
         shared_heads=(("decode_head.", DAFORMER_HEAD),)),
    Host("HRDAForSemanticSegmentation", prefix="segformer.encoder.", backbone="segformer",
         shared_heads=(("decode_head.head.", DAFORMER_HEAD),)),
    Host("EDAPSForPanopticSegmentation", prefix="segformer.encoder.", backbone="segformer",
         shared_heads=(("decode_head.", DAFORMER_HEAD),)),
)
