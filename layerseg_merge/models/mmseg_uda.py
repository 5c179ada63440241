"""Running imported DAFormer and HRDA/MIC models: transformers' MiT encoder plus small torch heads.

The heads are written here because no library ships them in a form that loads these
weights: transformers' SegFormer decode head concatenates the stages in reverse and
has no ASPP fusion or scale attention, and mmsegmentation 0.x is not installable
next to torch 2. Module names follow the checkpoint names, so the weights load as they
are. Semantics (reference §4, §6.3 and the released configs): MLP embeddings of the four
stages, concatenated in stage order 0..3; depthwise-separable ASPP fusion (dilations
1, 6, 12, 18) and a 3x3 bottleneck, each conv -> BatchNorm -> ReLU (BatchNorm in eval
mode); HRDA fuses a half-resolution context pass with high-resolution detail crops
through a class-wise scale attention. ``align_corners=False`` everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from layerseg_merge.models.sliding import stitch, windows

if TYPE_CHECKING:
    from layerseg_merge.models.info import ModelInfo


class ConvModule(nn.Sequential):
    """mmcv's ConvModule as these heads use it: conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, inputs: int, outputs: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(outputs)
        self.activate = nn.ReLU()


class DepthwiseSeparable(nn.Module):
    def __init__(self, channels: int, outputs: int, dilation: int):
        super().__init__()
        self.depthwise_conv = ConvModule(channels, channels, 3, dilation=dilation, groups=channels)
        self.pointwise_conv = ConvModule(channels, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class SeparableASPP(nn.Module):
    """DAFormer's context fusion: 1x1 branch + dilated depthwise-separable branches, then a 3x3 bottleneck."""

    def __init__(self, inputs: int, channels: int, dilations: Sequence[int]):
        super().__init__()
        self.aspp_modules = nn.ModuleList(
            [ConvModule(inputs, channels, 1) if d == 1 else DepthwiseSeparable(inputs, channels, d)
             for d in dilations])
        self.bottleneck = ConvModule(channels * len(dilations), channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], 1))


class Embedding(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.proj = nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(batch, -1, height, width)


class DAFormerHead(nn.Module):
    """Stage embeddings at stride 4, concatenated in stage order, fused, classified (logits at stride 4)."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int, fusion: str = "aspp",
                 dilations: Sequence[int] = (1, 6, 12, 18)):
        super().__init__()
        self.embed_layers = nn.ModuleList([Embedding(c, channels) for c in in_channels])
        joined = channels * len(in_channels)
        self.fuse_layer = SeparableASPP(joined, channels, dilations) if fusion == "aspp" else \
            ConvModule(joined, channels, 1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[2:]
        embedded = [F.interpolate(e, size=size, mode="bilinear", align_corners=False) if e.shape[2:] != size else e
                    for e in (layer(f) for layer, f in zip(self.embed_layers, features))]
        return self.conv_seg(self.fuse_layer(torch.cat(embedded, 1)))  # dropout: identity in eval


class HRDAHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int, dilations: Sequence[int]):
        super().__init__()
        self.head = DAFormerHead(in_channels, channels, num_classes, "aspp", dilations)
        self.scale_attention = DAFormerHead(in_channels, channels, num_classes, "conv1")


INFERENCE_KEYS = {"daformer": {"crop", "stride"}, "hrda": {"lr_scale", "hr_crop", "hr_stride", "crop", "stride"}}


def checked_inference(settings: dict, where: str) -> dict:
    """``layerseg_mmseg.inference``: {} (DAFormer ``whole``), DAFormer ``slide`` windows, or HRDA's settings."""
    kind, inference = settings["kind"], settings.get("inference") or {}
    if not isinstance(inference, dict):
        raise ValueError(f"{where}: layerseg_mmseg.inference must be an object")
    expected = INFERENCE_KEYS[kind]
    if inference and set(inference) != expected:
        wrong = sorted(set(inference) ^ expected)[0]
        state = "missing" if wrong in expected else "unknown"
        raise ValueError(f"{where}: layerseg_mmseg.inference of a {kind} model needs exactly "
                         f"{', '.join(sorted(expected))} ({wrong!r} is {state})")
    if kind == "hrda" and not inference:
        raise ValueError(f"{where}: an HRDA/MIC model needs layerseg_mmseg.inference ({', '.join(sorted(expected))})")
    for key, value in inference.items():
        if key == "lr_scale":
            if not (isinstance(value, int | float) and 0 < value < 1):
                raise ValueError(f"{where}: layerseg_mmseg.inference.lr_scale must be in (0, 1); got {value!r}")
        elif not (isinstance(value, int) and value > 0):
            raise ValueError(f"{where}: layerseg_mmseg.inference.{key} must be a positive integer; got {value!r}")
    return dict(inference)


class MmsegSegmenter(nn.Module):
    """An imported DAFormer or HRDA/MIC model: ``model(pixel_values=...)`` returns an object with ``logits``.

    DAFormer ``whole`` (the released test_cfg): logits at stride 4, the caller upsamples them. With
    sliding windows (HRDA always; DAFormer when its config says ``slide``), mmseg's ``slide_inference``
    over the input: each window's logits at the window size, averaged where windows overlap. An
    HRDA window runs HRDA's ``encode_decode``: half-resolution context, high-resolution detail crops,
    scale attention.
    """

    def __init__(self, encoder: nn.Module, settings: dict, config, where: str = "config.json"):
        super().__init__()
        self.encoder, self.kind, self.config = encoder, settings["kind"], config
        dims, channels, classes = list(config.hidden_sizes), settings["channels"], config.num_labels
        dilations = settings.get("dilations", (1, 6, 12, 18))
        if self.kind == "daformer":
            self.decode_head = DAFormerHead(dims, channels, classes, settings.get("fusion", "aspp"), dilations)
        else:
            self.decode_head = HRDAHead(dims, channels, classes, dilations)
        self.inference = checked_inference(settings, where)

    def features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(pixel_values=pixels, output_hidden_states=True).hidden_states)

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        if not self.inference:
            return SimpleNamespace(logits=self.decode_head(self.features(pixel_values)))
        height, width = pixel_values.shape[2:]
        crop, stride = self.inference["crop"], self.inference["stride"]
        boxes = windows(height, width, crop, stride)
        crops = torch.cat([pixel_values[:, :, y1:y2, x1:x2] for y1, x1, y2, x2 in boxes])
        window = self.hrda_window if self.kind == "hrda" else self.daformer_window
        return SimpleNamespace(logits=stitch(window(crops), boxes, (height, width)))

    def daformer_window(self, image: torch.Tensor) -> torch.Tensor:
        """DAFormer's encode_decode for one batch of equal-size windows: logits at the window size."""
        logits = self.decode_head(self.features(image))
        return F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=False)

    def hrda_window(self, image: torch.Tensor) -> torch.Tensor:
        """HRDA's encode_decode for one batch of equal-size windows: logits at the window size."""
        settings, head = self.inference, self.decode_head
        lr_scale = settings["lr_scale"]
        low = F.interpolate(image, scale_factor=lr_scale, mode="bilinear", align_corners=False)
        low_features = self.features(low)
        low_logits = head.head(low_features)
        boxes = windows(*image.shape[2:], settings["hr_crop"], settings["hr_stride"])
        crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, x1, y2, x2 in boxes])
        high_logits = stitch(head.head(self.features(crops)), boxes, tuple(image.shape[2:]), scale=4)
        attention = torch.sigmoid(head.scale_attention(low_features))
        low_logits = (1 - attention) * low_logits
        factor = 1 / lr_scale
        low_up = F.interpolate(low_logits, scale_factor=factor, mode="bilinear", align_corners=False)
        attention = F.interpolate(attention, scale_factor=factor, mode="bilinear", align_corners=False)
        fused = attention * high_logits + low_up
        return F.interpolate(fused, size=image.shape[2:], mode="bilinear", align_corners=False)


_MIT_EPS_1E6 = re.compile(r"(.*\.)?stages\.\d+\.(layer_norm|blocks\.\d+\.layernorm_(before|after))")


def set_mit_layer_norm_eps(encoder: nn.Module, eps: float = 1e-6) -> None:
    """The original MiT's block and stage norms use eps 1e-6; transformers builds every norm with 1e-5.

    (Reference §6.3/§6.4: with this the stage outputs match the original MiT to about 2e-7.)
    """
    for name, module in encoder.named_modules():
        if isinstance(module, nn.LayerNorm) and _MIT_EPS_1E6.fullmatch(name):
            module.eps = eps


def load_mmseg_model(model_dir: Path, info: ModelInfo, tensors: dict | None = None) -> nn.Module:
    """The runnable model of an imported directory (DAFormer or HRDA/MIC; SegFormer loads with transformers).

    ``tensors`` replaces the directory's weights (file names), e.g. an in-memory merge.
    """
    from transformers import AutoConfig, SegformerModel

    from layerseg_merge.io.checkpoint import load_tensors
    from layerseg_merge.models.transformers_loader import quiet_transformers

    settings = info.mmseg
    if settings["kind"] == "edaps":
        raise ValueError(f"{model_dir}: EDAPS (a Mask R-CNN panoptic model) can be merged and exported but not "
                         "evaluated: transformers has no Mask R-CNN counterpart; evaluate it with the EDAPS repository")
    if settings["kind"] not in ("daformer", "hrda"):
        raise ValueError(f"{model_dir}: unknown imported kind {settings['kind']!r}")
    config = AutoConfig.from_pretrained(model_dir)
    if tensors is None:
        tensors = load_tensors(model_dir)
    with quiet_transformers():  # the heads' tensors are "unexpected" for the encoder alone
        encoder = SegformerModel.from_pretrained(None, config=config, state_dict=tensors)
    set_mit_layer_norm_eps(encoder)
    model = MmsegSegmenter(encoder, settings, config, str(Path(model_dir) / "config.json"))
    head = {k[len("decode_head."):]: v for k, v in tensors.items() if k.startswith("decode_head.")}
    model.decode_head.load_state_dict(head, strict=True)
    return model.eval()


def load_mmseg_segformer(model_dir: Path, info: ModelInfo, tensors: dict | None) -> nn.Module:
    """An imported NVlabs SegFormer: transformers' ``SegformerForSemanticSegmentation`` with the original MiT's
    LayerNorm eps."""
    from layerseg_merge.models.transformers_loader import load_transformers_model

    model = load_transformers_model(model_dir, info, tensors)
    set_mit_layer_norm_eps(model)
    return model
