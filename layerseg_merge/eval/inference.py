"""Batched, device-resident inference of segmentation models.

Semantic models (``AutoModelForSemanticSegmentation``, imported mmseg models): logits
upsampled to the label size, argmax on the device. Imported DAFormer / HRDA / MIC models run
mmseg's own test pipeline (:mod:`layerseg_merge.eval.mmseg_pipeline`: cv2-style resize, two-step
upsampling) as stored in their ``config.json``. Universal models
(``AutoModelForUniversalSegmentation``): the image processor's own post-processing,
its panoptic output converted to COCO ids in one pass.

Inputs are uint8 batches (B, 3, H, W). The fast path (default where the processor is
supported, see :mod:`layerseg_merge.eval.preprocess`) preprocesses them on the device;
``preprocess="processor"`` runs the transformers image processor on the CPU instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor

from layerseg_merge.eval.class_alignment import ClassMismatch, align_classes, normalised
from layerseg_merge.eval.metrics import VOID, Segment
from layerseg_merge.eval.mmseg_pipeline import MmsegPipeline, pipeline_settings, upsample_two_step
from layerseg_merge.eval.options import InferenceOptions
from layerseg_merge.eval.preprocess import DevicePreprocessor, supports
from layerseg_merge.models.info import ModelInfo
from layerseg_merge.models.loading import load_model
from layerseg_merge.models.sliding import Stitcher, windows


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    from layerseg_merge.io.errors import option

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = option(f"--device {device}", f"device={device!r}")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"{name}: not a device name; use auto, cpu, cuda or cuda:N") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: this machine has no CUDA device torch can use; use "
                         f"{option('--device cpu', repr('cpu'))}")
    return chosen


@contextlib.contextmanager
def autocast(device: torch.device, amp: str):
    """``--amp``: autocast to bf16/fp16. On the CPU without oneDNN: torch 2.13's oneDNN computes some bf16
    convolutions wrong on CPUs with AMX (a strided 4x4 ``Conv2d`` of 16 channels, MiT's sequence reduction, off
    by as much as its output: logits off by 2.6, mIoU by 2 points, PQ by 6 on the shipped models, where
    torch's own kernels stay within bf16 rounding: 0.2 points)."""
    if amp == "off":
        yield
        return
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    onednn = torch.backends.mkldnn.enabled
    if device.type == "cpu":
        torch.backends.mkldnn.enabled = False
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    finally:
        torch.backends.mkldnn.enabled = onednn


class ForwardTimer:
    """Time spent in the model's forward passes, without synchronising the device on every batch.

    On CUDA each forward is bracketed by events that are read only at the end; on the CPU
    by ``perf_counter``.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.seconds = 0.0

    @contextlib.contextmanager
    def __call__(self):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((start, end))
        else:
            began = time.perf_counter()
            yield
            self.seconds += time.perf_counter() - began

    def total(self) -> float:
        if self.events:
            torch.cuda.synchronize()
            self.seconds += sum(start.elapsed_time(end) for start, end in self.events) / 1000
            self.events = []
        return self.seconds


def coco_ids(segmentation: torch.Tensor, segments_info: Sequence[dict],
             label_to_category: dict[int, int]) -> tuple[torch.Tensor, list[Segment]]:
    """A processor's panoptic output (segment ids, -1 or 0 where none) as COCO ids 1..n (VOID = 0).

    Segment k of ``segments_info`` becomes id k (fused stuff segments repeat a processor id:
    the last one wins); one table look-up over the map, and segments that cover no pixel
    are dropped.
    """
    seg = segmentation.to(torch.int64)
    size = max((int(info["id"]) for info in segments_info), default=0) + 2
    table = torch.zeros(size, dtype=torch.int64, device=seg.device)  # index 0: processor id -1, 1: id 0
    segments = []
    for new_id, info in enumerate(segments_info, start=1):
        table[int(info["id"]) + 1] = new_id
        segments.append(Segment(new_id, label_to_category[int(info["label_id"])]))
    ids = table[(seg + 1).clamp_(0, size - 1)]
    present = (torch.bincount(ids.flatten(), minlength=len(segments) + 1)[1:] > 0).tolist()
    ids[ids < 0] = VOID
    return ids, [segment for segment, keep in zip(segments, present) if keep]


class Segmenter:
    """A segmentation model from a directory, ready for batched inference on uint8 batches."""

    def __init__(self, model_dir: str | Path, infer: InferenceOptions = InferenceOptions(),
                 tensors: dict[str, torch.Tensor] | None = None):
        """``infer``: how to run it (``batch_size`` is also the number of sliding-window crops per forward pass);
        ``tensors``: weights to use instead of the directory's (file names; e.g. an in-memory merge)."""
        if not isinstance(infer, InferenceOptions):
            raise TypeError(f"give how to infer as InferenceOptions(...), not {infer!r}")
        model_dir = self.model_dir = Path(model_dir)
        info = ModelInfo.from_dir(model_dir)
        slide, preprocess = infer.slide, infer.preprocess
        self.universal = info.universal
        self.device = pick_device(infer.device)
        self.mmseg_pipeline = None  # DAFormer / HRDA: mmseg's test pipeline instead of the image processor
        if infer.test_scale is not None and not info.imported_heads:
            raise ValueError(f"{model_dir}: --test-scale sets the mmseg test pipeline of imported DAFormer/HRDA/MIC "
                             "models; this model resizes as its preprocessor_config.json says: drop --test-scale, or "
                             "change the processor's size there")
        if info.imported_heads:
            if info.mmseg_kind == "hrda" and slide is not None:
                raise ValueError(f"{model_dir}: HRDA/MIC models slide as their config says (layerseg_mmseg.inference "
                                 "in config.json); drop --slide")
            if preprocess == "processor":
                raise ValueError(f"{model_dir}: an imported {info.mmseg_kind} model runs its mmseg test pipeline "
                                 "(layerseg_mmseg.test_pipeline in config.json), not an image processor; drop "
                                 "--preprocess processor")
        self.model = load_model(model_dir, tensors, info).to(self.device)
        if info.imported_heads:  # after the load, which refuses an EDAPS model with its own message
            self.mmseg_pipeline = pipeline_settings(info.mmseg, str(model_dir / "config.json"))
            if infer.test_scale is not None:  # leaves the paper's protocol: the report's provenance shows it
                self.mmseg_pipeline = {**self.mmseg_pipeline, "img_scale": list(infer.test_scale),
                                       "source": f"{self.mmseg_pipeline['source']}, img_scale from --test-scale "
                                       f"(was {self.mmseg_pipeline['img_scale']})"}
        if not (model_dir / "preprocessor_config.json").exists():
            raise FileNotFoundError(
                f"{model_dir}: no preprocessor_config.json; save the model's image processor with "
                "save_pretrained() next to its weights")
        self.processor = AutoImageProcessor.from_pretrained(model_dir)
        if preprocess == "device" and not supports(self.processor):
            raise ValueError(f"{model_dir}: {type(self.processor).__name__} cannot run on the device; use "
                             "--preprocess processor")
        self.fast = self.mmseg_pipeline is not None or (preprocess != "processor" and supports(self.processor))
        self.amp, self.slide, self.crops_per_forward = infer.amp, slide, infer.batch_size
        if self.mmseg_pipeline is not None:
            self.to_inputs = MmsegPipeline(self.mmseg_pipeline, self.device, resize=slide is None)
        elif self.fast:
            self.to_inputs = DevicePreprocessor(self.processor, self.device, resize=slide is None)
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        # A center/offset panoptic head (see center_offset.py) has extra output channels.
        self.panoptic_head = getattr(self.model.config, "panoptic_head", None)
        if self.panoptic_head:
            self.id2label = {k: v for k, v in self.id2label.items() if k < self.panoptic_head["num_classes"]}
        self.timer = ForwardTimer(self.device)
        self.forward = self.model
        if infer.compile:
            self._compile()

    @property
    def forward_seconds(self) -> float:
        return self.timer.total()

    # -------------------------------------------------------------------------------- forward

    def _compile(self) -> None:
        """torch.compile the model; a clear message and the eager model where that fails."""
        import warnings

        try:
            self.forward = torch.compile(self.model, dynamic=False)
        except Exception as error:  # torch raises many types here (missing compiler, unsupported op)
            warnings.warn(f"--compile: torch.compile failed ({str(error).splitlines()[0]}); running eagerly",
                          stacklevel=2)
            self.forward = self.model
        self._compiled_first_call = self.forward is not self.model

    def _run(self, inputs: dict):
        with torch.inference_mode(), autocast(self.device, self.amp), self.timer():
            try:
                return self.forward(**inputs)
            except Exception as error:
                if not getattr(self, "_compiled_first_call", False):
                    raise
                import warnings

                warnings.warn(f"--compile: the compiled model failed ({str(error).splitlines()[0]}); running "
                              "eagerly", stacklevel=2)
                self.forward, self._compiled_first_call = self.model, False
                return self.forward(**inputs)
            finally:
                self._compiled_first_call = False

    def inputs(self, images: torch.Tensor | Sequence[torch.Tensor], resize: bool = True) -> dict:
        """Model inputs for uint8 images: a (B, 3, H, W) batch, or a list of (3, H, W) images."""
        if self.fast:
            if not isinstance(images, torch.Tensor):
                images = torch.stack(list(images))
            return self.to_inputs(images.to(self.device, non_blocking=True))
        pictures = [np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()) for image in images]
        options = {} if resize else {"do_resize": False}
        inputs = self.processor(images=pictures, return_tensors="pt", **options)
        return {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    def logits(self, images, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Float logits (B, K, H, W) at the label size (all images of the batch share ``sizes[0]``)."""
        if self.slide is not None:
            return torch.cat([self._slide(image[None], size) for image, size in zip(images, sizes)])
        inputs = self.inputs(images)
        logits = self._run(inputs).logits.float()
        if self.mmseg_pipeline is not None:  # mmseg: to the network input size, then to the image size
            return upsample_two_step(logits, inputs["pixel_values"].shape[-2:], sizes[0])
        return F.interpolate(logits, size=sizes[0], mode="bilinear", align_corners=False)

    # -------------------------------------------------------------------------------- tasks

    def semantic(self, images, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Class-index maps (H, W) on the device, one per image, at the sizes given."""
        if self.universal:
            outputs = self._run(self.inputs(images))
            return self.processor.post_process_semantic_segmentation(outputs, target_sizes=list(sizes))
        if len(set(sizes)) == 1:
            return list(self.logits(images, sizes)[:, : len(self.id2label)].argmax(1))
        return [self.logits([image], [size])[0, : len(self.id2label)].argmax(0) for image, size in zip(images, sizes)]

    def _slide(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Sliding-window inference at native resolution (mmsegmentation's ``slide`` mode), crops batched."""
        crop, stride = self.slide
        pixels = self.inputs(image, resize=False)["pixel_values"]
        _, _, height, width = pixels.shape
        boxes = windows(height, width, crop, stride)
        stitcher = Stitcher((height, width))
        for first in range(0, len(boxes), self.crops_per_forward):
            chunk = boxes[first:first + self.crops_per_forward]
            shapes = {(y2 - y1, x2 - x1) for y1, x1, y2, x2 in chunk}
            groups = [chunk] if len(shapes) == 1 else [[box] for box in chunk]
            for group in groups:
                crops = torch.cat([pixels[:, :, y1:y2, x1:x2] for y1, x1, y2, x2 in group])
                logits = self._run({"pixel_values": crops}).logits.float()
                y1, x1, y2, x2 = group[0]
                stitcher.add(F.interpolate(logits, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False),
                             group)
        return F.interpolate(stitcher.result(), size=size, mode="bilinear", align_corners=False)

    def require_panoptic(self) -> None:
        if not (self.universal or self.panoptic_head):
            raise ValueError("panoptic evaluation needs a universal segmentation model (Mask2Former, "
                             "MaskFormer, OneFormer) or a center/offset panoptic head; this one is semantic")

    def panoptic(self, images, sizes: Sequence[tuple[int, int]], label_to_category: dict[int, int],
                 stuff_labels: set[int]) -> list[tuple[torch.Tensor, list[Segment]]]:
        """COCO-style id maps (VOID = 0) and their segments, one per image."""
        if self.panoptic_head:
            from layerseg_merge.eval.center_offset import decode

            if len(set(sizes)) == 1:
                logits = self.logits(images, sizes)
                return [decode(logits[i], self.panoptic_head, label_to_category) for i in range(len(sizes))]
            return [decode(self.logits([image], [size])[0], self.panoptic_head, label_to_category)
                    for image, size in zip(images, sizes)]
        self.require_panoptic()
        outputs = self._run(self.inputs(images))
        results = self.processor.post_process_panoptic_segmentation(
            outputs, target_sizes=list(sizes), label_ids_to_fuse=stuff_labels)
        return [coco_ids(result["segmentation"].to(self.device), result["segments_info"], label_to_category)
                for result in results]


def label_to_category(id2label: dict[int, str], categories: dict[int, dict]) -> dict[int, int]:
    """Model label index -> dataset category id, matched by name (:func:`align_classes`); a model without class
    names takes the categories in id order when their numbers agree."""
    ordered = sorted(categories)
    names = [id2label[label] for label in sorted(id2label)]
    alignment = align_classes(names, [str(categories[c].get("name", c)) for c in ordered], "the model",
                              "the ground truth's categories")
    if alignment.identity:
        if len(ordered) != len(id2label):
            raise ClassMismatch(f"the model has {len(id2label)} labels but the dataset {len(ordered)} categories, "
                                "and the model names no class; evaluate with a dataset of the model's classes")
        return {label: ordered[index] for index, label in enumerate(sorted(id2label))}
    unknown = [name for name, scored in zip(names, alignment.from_prediction) if scored is None]
    if unknown:
        raise ClassMismatch(f"the model predicts {', '.join(unknown[:6])}, which the ground truth's categories "
                            f"({', '.join(str(categories[c].get('name', c)) for c in ordered[:6])}"
                            f"{', ...' if len(ordered) > 6 else ''}) lack: a panoptic segment of a category the "
                            "ground truth does not know cannot be scored; evaluate on data of the model's classes")
    by_name = {normalised(str(categories[c].get("name", c))): c for c in ordered}
    return {label: by_name[normalised(name)] for label, name in zip(sorted(id2label), names)}
