"""Plain ViT-style backbones: embeddings, then one list of ``num_hidden_layers`` layers.

Covers ViT, DINOv2, BEiT and DPT (its ViT encoder). Embeddings (and BEiT's
shared relative position bias) are layer 0; the final norm is the last layer.
"""

from layerseg_merge.architectures.base import BackboneFamily, Host, Rule

_FINAL_NORM = r"layernorm\..+"

VIT = BackboneFamily(
    name="vit",
    model_types=("vit", "dinov2", "beit", "dpt"),
    num_layers=lambda config: config.num_hidden_layers,
    rules=(
        Rule(r"embeddings\..+", lambda m, c: 0),
        Rule(r"encoder\.relative_position_bias\..+", lambda m, c: 0),
        Rule(r"encoder\.layer\.(\d+)\..+", lambda m, c: int(m[1])),
        Rule(_FINAL_NORM, lambda m, c: c.num_hidden_layers - 1),
    ),
    signature_keys=("hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "image_size", "patch_size", "num_channels"),
    host_specific=(_FINAL_NORM,),
)

HOSTS = (
    Host("ViTModel", prefix="", backbone="vit"),
    Host("Dinov2Model", prefix="", backbone="vit"),
    Host("Dinov2Backbone", prefix="", backbone="vit"),
    Host("BeitForSemanticSegmentation", prefix="beit.", backbone="vit"),
    Host("DPTForSemanticSegmentation", prefix="dpt.", backbone="vit"),
)
