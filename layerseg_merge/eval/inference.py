"""Batched, device-resident inference of transformers segmentation models.

Semantic models (``AutoModelForSemanticSegmentation``): logits upsampled to the
label size, argmax. Universal models (``AutoModelForUniversalSegmentation``):
the image processor's own post-processing, panoptic output converted to COCO ids.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    AutoModelForUniversalSegmentation,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

from layerseg_merge.eval.metrics import VOID, Segment


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device}: not a device name; use auto, cpu, cuda or cuda:N") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA device torch can use; use --device cpu")
    return chosen


def autocast(device: torch.device, amp: str):
    if amp == "off":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


class Segmenter:
    """A transformers segmentation model from a directory, ready for batched inference."""

    def __init__(self, model_dir: str | Path, device: str = "auto", amp: str = "off",
                 slide: tuple[int, int] | None = None):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(f"{model_dir}: no config.json; pass a save_pretrained() directory")
        config = AutoConfig.from_pretrained(model_dir)
        self.universal = config.model_type not in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
        self.device = pick_device(device)
        imported = getattr(config, "layerseg_mmseg", None)  # an mmseg checkpoint (formats/mmseg.py)
        if imported and imported.get("kind") != "segformer":
            from layerseg_merge.formats.mmseg_model import load_mmseg_model

            if imported.get("kind") == "hrda" and slide is not None:
                raise ValueError(f"{model_dir}: HRDA/MIC models slide as their config says (layerseg_mmseg.inference "
                                 "in config.json); drop --slide")
            self.model = load_mmseg_model(model_dir, imported).to(self.device)
        else:
            loader = AutoModelForUniversalSegmentation if self.universal else AutoModelForSemanticSegmentation
            self.model = loader.from_pretrained(model_dir).to(self.device).eval()
            if imported:  # an mmseg SegFormer: its MiT's original LayerNorm eps
                from layerseg_merge.formats.mmseg_model import set_mit_layer_norm_eps

                set_mit_layer_norm_eps(self.model)
        if not (model_dir / "preprocessor_config.json").exists():
            raise FileNotFoundError(
                f"{model_dir}: no preprocessor_config.json; save the model's image processor with "
                "save_pretrained() next to its weights")
        self.processor = AutoImageProcessor.from_pretrained(model_dir)
        self.amp, self.slide = amp, slide
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        # A center/offset panoptic head (see center_offset.py) has extra output channels.
        self.panoptic_head = getattr(self.model.config, "panoptic_head", None)
        if self.panoptic_head:
            self.id2label = {k: v for k, v in self.id2label.items() if k < self.panoptic_head["num_classes"]}
        self.forward_seconds = 0.0

    def _forward(self, images: list[np.ndarray], **processor_options):
        inputs = self.processor(images=images, return_tensors="pt", **processor_options)
        inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        import time

        start = time.perf_counter()
        with torch.inference_mode(), autocast(self.device, self.amp):
            outputs = self.model(**inputs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.forward_seconds += time.perf_counter() - start
        return outputs, inputs

    def semantic(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        """Class-index maps (H, W) on the device, at each image's size."""
        sizes = [image.shape[:2] for image in images]
        if self.universal:
            outputs, _ = self._forward(images)
            return self.processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
        if self.slide is not None:
            return [self._slide(image) for image in images]
        outputs, _ = self._forward(images)
        logits = outputs.logits.float()[:, : len(self.id2label)]
        return [F.interpolate(logits[i:i + 1], size=size, mode="bilinear", align_corners=False)[0]
                .argmax(0) for i, size in enumerate(sizes)]

    def _slide(self, image: np.ndarray) -> torch.Tensor:
        """Sliding-window inference at native resolution (mmsegmentation's ``slide`` mode)."""
        crop, stride = self.slide
        inputs = self.processor(images=[image], return_tensors="pt", do_resize=False)
        pixels = inputs["pixel_values"].to(self.device)
        _, _, height, width = pixels.shape
        rows = max(height - crop + stride - 1, 0) // stride + 1
        cols = max(width - crop + stride - 1, 0) // stride + 1
        total, count = None, torch.zeros(1, 1, height, width, device=self.device)
        for row in range(rows):
            for col in range(cols):
                y1, x1 = min(row * stride, max(height - crop, 0)), min(col * stride, max(width - crop, 0))
                y2, x2 = min(y1 + crop, height), min(x1 + crop, width)
                with torch.inference_mode(), autocast(self.device, self.amp):
                    logits = self.model(pixel_values=pixels[:, :, y1:y2, x1:x2]).logits.float()
                logits = F.interpolate(logits, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
                if total is None:
                    total = torch.zeros(1, logits.shape[1], height, width, device=self.device)
                total[:, :, y1:y2, x1:x2] += logits
                count[:, :, y1:y2, x1:x2] += 1
        logits = (total / count)[:, : len(self.id2label)]
        return F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)[0].argmax(0)

    def require_panoptic(self) -> None:
        if not (self.universal or self.panoptic_head):
            raise ValueError("panoptic evaluation needs a universal segmentation model (Mask2Former, "
                             "MaskFormer, OneFormer) or a center/offset panoptic head; this one is semantic")

    def panoptic(self, images: list[np.ndarray], label_to_category: dict[int, int],
                 stuff_labels: set[int]) -> list[tuple[torch.Tensor, list[Segment]]]:
        """COCO-style id maps (VOID = 0) and their segments, one per image."""
        if self.panoptic_head:
            from layerseg_merge.eval.center_offset import decode

            outputs, _ = self._forward(images)
            logits = outputs.logits.float()
            return [decode(F.interpolate(logits[i:i + 1], size=image.shape[:2], mode="bilinear",
                                         align_corners=False)[0], self.panoptic_head, label_to_category)
                    for i, image in enumerate(images)]
        self.require_panoptic()
        outputs, _ = self._forward(images)
        results = self.processor.post_process_panoptic_segmentation(
            outputs, target_sizes=[image.shape[:2] for image in images], label_ids_to_fuse=stuff_labels)
        converted = []
        for result in results:
            segmentation = result["segmentation"].to(self.device, torch.int64)
            ids = torch.full_like(segmentation, VOID)
            segments = []
            for new_id, info in enumerate(result["segments_info"], start=1):
                ids[segmentation == info["id"]] = new_id
                segments.append(Segment(new_id, label_to_category[int(info["label_id"])]))
            present = set(torch.unique(ids).tolist())
            converted.append((ids, [s for s in segments if s.id in present]))
        return converted


def label_to_category(id2label: dict[int, str], categories: dict[int, dict]) -> dict[int, int]:
    """Model label index -> dataset category id: by name when they match, else by sorted order."""
    by_name = {c["name"]: cid for cid, c in categories.items()}
    if all(name in by_name for name in id2label.values()):
        return {label: by_name[name] for label, name in id2label.items()}
    ordered = sorted(categories)
    if len(ordered) != len(id2label):
        raise ValueError(f"the model has {len(id2label)} labels but the dataset {len(ordered)} categories, "
                         "and their names differ; evaluate with a dataset of the model's classes")
    return {label: ordered[label] for label in sorted(id2label)}
