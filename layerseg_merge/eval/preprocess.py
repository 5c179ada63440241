"""The image processor's preprocessing, done on the device: uint8 batches in, model inputs out.

transformers' image processors work image by image on the CPU (about 10 ms per
Cityscapes image) and hand over float32 arrays (25 MB each). Here the same steps run
on the device on a uint8 batch: resize to the processor's size (its resampling
filter, antialiased, then rounded to integers as the processors do on uint8 images),
rescale, normalise, and pad with a pixel mask where the processor pads (Mask2Former,
MaskFormer). The geometry (resized and padded size for an input size) is taken from
the processor itself, run once per input size on a blank image, so every size rule
(fixed size, shortest/longest edge, size divisor) is the processor's own.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Processors whose preprocessing is resize -> rescale -> normalise [-> pad] and nothing else.
SUPPORTED = ("SegformerImageProcessor", "Mask2FormerImageProcessor", "MaskFormerImageProcessor")
_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def supports(processor) -> bool:
    name = type(processor).__name__
    return any(name in (s, s + "Pil", s + "Fast") for s in SUPPORTED) and _MODES.get(
        int(getattr(processor, "resample", 2) or 2)) is not None


class DevicePreprocessor:
    """``processor(images)`` for uint8 (B, 3, H, W) batches already on the device."""

    def __init__(self, processor, device: torch.device, resize: bool = True):
        self.processor, self.device = processor, device
        self.resize = resize and bool(getattr(processor, "do_resize", False))
        self.mode = _MODES[int(getattr(processor, "resample", 2) or 2)]
        self.scale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
        self.normalize = bool(getattr(processor, "do_normalize", True))
        self.mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(processor.image_std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.pixel_mask = "pixel_mask" in getattr(processor, "model_input_names", ())
        self._geometry: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]] = {}

    def geometry(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(resized size, padded size) the processor gives an image of ``height`` x ``width``."""
        key = (height, width)
        if key not in self._geometry:
            if not self.resize:
                self._geometry[key] = (key, key)
            else:
                blank = np.zeros((height, width, 3), dtype=np.uint8)
                out = self.processor(images=[blank], return_tensors="pt")
                padded = tuple(int(v) for v in out["pixel_values"].shape[-2:])
                if "pixel_mask" in out:
                    valid = out["pixel_mask"][0].bool()
                    resized = (int(valid.any(1).sum()), int(valid.any(0).sum()))
                else:
                    resized = padded
                self._geometry[key] = (resized, padded)
        return self._geometry[key]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, _, height, width = images.shape
        (new_h, new_w), (pad_h, pad_w) = self.geometry(height, width)
        x = images.float()
        if (new_h, new_w) != (height, width):
            if self.mode == "nearest":
                x = F.interpolate(x, size=(new_h, new_w), mode="nearest")
            else:
                x = F.interpolate(x, size=(new_h, new_w), mode=self.mode, antialias=True, align_corners=False)
                x = x.round_().clamp_(0, 255)  # the processors resize uint8 images: integers again
        x = x * self.scale
        if self.normalize:
            x = (x - self.mean) / self.std
        inputs = {}
        if (pad_h, pad_w) != (new_h, new_w):
            x = F.pad(x, (0, pad_w - new_w, 0, pad_h - new_h))
        if self.pixel_mask:
            mask = torch.zeros(batch, pad_h, pad_w, dtype=torch.int64, device=x.device)
            mask[:, :new_h, :new_w] = 1
            inputs["pixel_mask"] = mask
        inputs["pixel_values"] = x.contiguous()
        return inputs
