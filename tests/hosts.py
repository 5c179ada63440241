"""Tiny random models of every supported host (seconds to build), with a forward-pass input."""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as T
from helpers import randomize_batchnorm

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def swin_config(**overrides):
    values = dict(image_size=64, patch_size=4, embed_dim=8, depths=[1, 2, 1, 1], num_heads=[1, 1, 2, 2],
                  window_size=2, out_features=STAGES)
    return T.SwinConfig(**(values | overrides))


def convnext_config(**overrides):
    values = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 2, 1, 1], out_features=STAGES)
    return T.ConvNextConfig(**(values | overrides))


def vit_kwargs(**overrides):
    values = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                  image_size=32, patch_size=8)
    return values | overrides


def upernet(backbone) -> T.UperNetForSemanticSegmentation:
    return T.UperNetForSemanticSegmentation(T.UperNetConfig(
        backbone_config=backbone, hidden_size=16, use_auxiliary_head=False, num_labels=5))


def mask2former(backbone=None) -> T.Mask2FormerForUniversalSegmentation:
    return T.Mask2FormerForUniversalSegmentation(T.Mask2FormerConfig(
        backbone_config=backbone or swin_config(), feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
        num_attention_heads=2, num_queries=4, num_labels=5, common_stride=4))


def oneformer() -> T.OneFormerForUniversalSegmentation:
    return T.OneFormerForUniversalSegmentation(T.OneFormerConfig(
        backbone_config=swin_config(), num_labels=5, hidden_dim=32, mask_dim=32, conv_dim=32,
        encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
        num_attention_heads=2, num_queries=4, text_encoder_n_ctx=4, text_encoder_width=32,
        text_encoder_num_layers=1, text_encoder_context_length=8, text_encoder_proj_layers=1,
        text_encoder_vocab_size=50, common_stride=4, task_seq_len=8))


def maskformer() -> T.MaskFormerForInstanceSegmentation:
    backbone = T.MaskFormerSwinConfig(**swin_config().to_dict() | {"model_type": "maskformer-swin"})
    return T.MaskFormerForInstanceSegmentation(T.MaskFormerConfig(
        backbone_config=backbone, fpn_feature_size=32, mask_feature_size=32, num_labels=5,
        decoder_config=dict(model_type="detr", d_model=16, encoder_layers=1, decoder_layers=1,
                            decoder_attention_heads=2, encoder_attention_heads=2, decoder_ffn_dim=16,
                            encoder_ffn_dim=16, num_queries=4)))


def segformer(cls=T.SegformerForSemanticSegmentation):
    return cls(T.SegformerConfig(depths=[1, 2, 1, 1], sr_ratios=[4, 2, 1, 1], hidden_sizes=[8, 16, 24, 32],
                                 num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16, num_labels=5))


def image(size: int) -> Callable[[], dict]:
    return lambda: {"pixel_values": torch.randn(1, 3, size, size)}


# name -> (builder, forward inputs)
HOSTS: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[], dict]]] = {
    "segformer": (segformer, image(64)),
    "segformer_model": (lambda: segformer(T.SegformerModel), image(64)),
    "upernet_swin": (lambda: upernet(swin_config()), image(64)),
    "upernet_convnext": (lambda: upernet(convnext_config()), image(64)),
    "mask2former_swin": (mask2former, image(64)),
    "maskformer_swin": (maskformer, image(64)),
    "oneformer_swin": (oneformer, lambda: image(64)() | {"task_inputs": torch.randint(0, 50, (1, 8))}),
    "convnext_classifier": (lambda: T.ConvNextForImageClassification(
        convnext_config(out_features=None, num_labels=3)), image(64)),
    "convnext_model": (lambda: T.ConvNextModel(convnext_config(out_features=None)), image(64)),
    "vit": (lambda: T.ViTModel(T.ViTConfig(**vit_kwargs())), image(32)),
    "dinov2": (lambda: T.Dinov2Model(T.Dinov2Config(**vit_kwargs())), image(32)),
    "dinov2_backbone": (lambda: T.Dinov2Backbone(T.Dinov2Config(**vit_kwargs(), out_indices=[1, 3])),
                        image(32)),
    "beit": (lambda: T.BeitForSemanticSegmentation(T.BeitConfig(
        **vit_kwargs(), out_indices=[0, 1, 2, 3], num_labels=5, use_relative_position_bias=True,
        auxiliary_channels=8, pool_scales=[1, 2])), image(32)),
    "dpt": (lambda: T.DPTForSemanticSegmentation(T.DPTConfig(
        **vit_kwargs(), backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=16, num_labels=5)), image(32)),
}


def build(name: str, path, seed: int):
    torch.manual_seed(seed)
    model = HOSTS[name][0]().eval()
    randomize_batchnorm(model, seed)
    with torch.no_grad():  # randomise every float tensor so that merges are visible
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.01)
    model.save_pretrained(path)
    return path


def forward_order(model: torch.nn.Module, inputs: dict) -> dict[str, int]:
    """Parameter name -> index of the first call of its module during a forward pass."""
    order: dict[str, int] = {}
    handles = []
    for module_name, module in model.named_modules():
        def hook(mod, args, name=module_name):
            order.setdefault(name, len(order))
        handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(**inputs)
    for handle in handles:
        handle.remove()
    result = {}
    for name, _ in model.named_parameters():
        module_name = name.rsplit(".", 1)[0]
        if module_name in order:
            result[name] = order[module_name]
    return result


def panoptic_mask2former(path, categories, processor_size: dict, seed: int = 0):
    """A tiny Mask2Former saved with the label names of ``categories`` and an image processor."""
    from transformers import Mask2FormerImageProcessor

    torch.manual_seed(seed)
    model = mask2former()
    model.config.id2label = {i: c["name"] for i, c in enumerate(categories)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.config.num_labels = len(categories)
    type(model)(model.config).save_pretrained(path)
    Mask2FormerImageProcessor(size=processor_size, do_reduce_labels=False).save_pretrained(path)
    return path
