"""mmsegmentation 0.x's test pipeline for imported DAFormer / HRDA / MIC models, on the device.

What ``tools/test.py`` does around the model (mmseg 0.16 as vendored by the DAFormer, HRDA and
MIC repositories, with mmcv 1.x):

1. ``MultiScaleFlipAug(img_scale=(W, H))`` + ``Resize(keep_ratio=True)``: ``mmcv.imrescale`` scales
   the image to fit inside the long/short edges of ``img_scale``, keeping its aspect ratio
   (:func:`rescale_size`), with OpenCV's ``INTER_LINEAR`` on the uint8 image: no antialiasing,
   fixed-point weights, integers again (:func:`cv2_resize_linear`, bit-exact, see its docstring).
2. ``Normalize``: ``(x - mean) * (1 / std)`` on the 0-255 scale (float32 image, double
   arithmetic, as ``mmcv.imnormalize`` calls OpenCV), BGR -> RGB.
3. The segmentor: DAFormer ``whole`` (logits at stride 4, upsampled to the network input size),
   HRDA ``slide`` (windows over the *resized* image, see ``models/mmseg_uda.py``); then the
   logits are upsampled once more, to the original image size: two bilinear steps
   (:func:`upsample_two_step`).

The settings live in ``config.json`` under ``layerseg_mmseg.test_pipeline`` (written by
``layerseg import mmseg``); a directory imported before they existed gets the released
GTA->Cityscapes configuration of its kind (:func:`pipeline_settings`).

Every size the pipeline takes (img_scale, the sliding windows and their strides) is checked by
:func:`size_problem`, at import and at eval: whole numbers of pixels, each side at most
``MAX_SIDE`` (16384: twice an 8K UHD frame's 7680, 8x a Cityscapes image), and a network input
(the resized image, a window) of at most ``MAX_PIXELS`` (64 Mpx, 8192 x 8192: 32x the largest
released one, HRDA's 2048 x 1024, where the float32 logits of 19 classes alone take 5 GB per image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from layerseg_merge.eval.pipeline_sizes import (  # noqa: F401 (MAX_PIXELS, MAX_SIDE, size_problem: re-exported)
    MAX_PIXELS,
    MAX_SIDE,
    PipelineError,
    checked_size,
    shown,
    size_problem,
)

# The papers' img_norm_cfg (every released config): ImageNet mean/std on the 0-255 scale, to_rgb=True.
MMSEG_MEAN, MMSEG_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
# Test scales of the released GTA->Cityscapes configs: DAFormer uda_gta_to_cityscapes_512x512.py,
# HRDA/MIC uda_gtaHR_to_cityscapesHR_1024x1024.py (MultiScaleFlipAug img_scale, (w, h)).
RELEASED_SCALES = {"daformer": (1024, 512), "hrda": (2048, 1024)}
PIPELINE_KEYS = {"img_scale", "keep_ratio", "resize", "mean", "std", "source"}
_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS
# What to do about a bad setting in config.json: the released settings, or a new import.
EVAL_FIX = ("edit config.json or import the checkpoint again (released: img_scale [1024, 512] for DAFormer, "
            "[2048, 1024] for HRDA/MIC; HRDA/MIC windows crop 1024, stride 512, hr_crop 512, hr_stride 256)")


def check_inference(inference: dict, where: str, names: dict[str, str], fix: str) -> None:
    """The sizes and scale of ``layerseg_mmseg.inference`` (as many as it has); ``names``: how ``where`` calls them."""
    for key in ("crop", "stride", "hr_crop", "hr_stride"):
        if key in inference:
            checked_size(inference[key], f"{where}: {names[key]}", fix, sides=1, window=key in ("crop", "hr_crop"))
    for crop, stride in (("crop", "stride"), ("hr_crop", "hr_stride")):
        if crop in inference and stride in inference and inference[stride] > inference[crop]:
            raise PipelineError(f"{where}: {names[stride]} {inference[stride]} is more than {names[crop]} "
                                f"{inference[crop]}: the windows would leave pixels out; {fix}")
    value = inference.get("lr_scale", 0.5)  # HRDA only
    if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1):
        raise PipelineError(f"{where}: {names['lr_scale']} {shown(value)}: must be a number in (0, 1), the scale of "
                            f"HRDA's context pass; {fix}")


def normalize_problem(values, key: str) -> str | None:
    """Why ``values`` is not Normalize's ``mean`` or ``std`` (3 finite numbers, std above 0); None: it is."""
    if not (isinstance(values, list | tuple) and len(values) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            and all(math.isfinite(v) for v in values) and (key == "mean" or min(values) > 0)):
        return f"must be 3 finite numbers{' above 0' if key == 'std' else ''}"
    return None


def released_test_pipeline(kind: str, source: str = "released GTA->Cityscapes config") -> dict:
    """The test pipeline of the released configs for ``kind`` (``daformer`` or ``hrda``)."""
    return {"img_scale": list(RELEASED_SCALES[kind]), "keep_ratio": True, "resize": "cv2_bilinear",
            "mean": list(MMSEG_MEAN), "std": list(MMSEG_STD), "source": source}


def pipeline_settings(settings: dict, where: str = "config.json") -> dict:
    """The checked ``test_pipeline`` of ``layerseg_mmseg`` settings; the released one for older imports.

    The sizes of ``inference`` are checked here too (their keys and types by the model that runs them).
    """
    kind = settings.get("kind")
    stored = settings.get("test_pipeline")
    if stored is None:
        return released_test_pipeline(kind, "released GTA->Cityscapes config (imported before test_pipeline "
                                            "was stored)")
    if not isinstance(stored, dict):
        raise PipelineError(f"{where}: layerseg_mmseg.test_pipeline must be an object")
    unknown = sorted(set(stored) - PIPELINE_KEYS)
    if unknown:
        raise PipelineError(f"{where}: unknown key {unknown[0]!r} in layerseg_mmseg.test_pipeline; known: "
                            f"{', '.join(sorted(PIPELINE_KEYS))}")
    pipeline = {**released_test_pipeline(kind), **stored}
    checked_size(pipeline["img_scale"], f"{where}: layerseg_mmseg.test_pipeline.img_scale", EVAL_FIX)
    if pipeline["resize"] != "cv2_bilinear":
        raise PipelineError(f"{where}: layerseg_mmseg.test_pipeline.resize {pipeline['resize']!r} is not supported; "
                            "use cv2_bilinear (mmcv's default)")
    if not isinstance(pipeline["keep_ratio"], bool):
        raise PipelineError(f"{where}: layerseg_mmseg.test_pipeline.keep_ratio must be true or false")
    for key in ("mean", "std"):
        if problem := normalize_problem(pipeline[key], key):
            raise PipelineError(f"{where}: layerseg_mmseg.test_pipeline.{key} {problem}; got {shown(pipeline[key])}")
    inference = settings.get("inference")
    if isinstance(inference, dict):  # its keys and types are the model's (models/mmseg_uda.py); here its bounds
        check_inference(inference, where, {key: f"layerseg_mmseg.inference.{key}" for key in
                                           ("crop", "stride", "hr_crop", "hr_stride", "lr_scale")}, EVAL_FIX)
    return pipeline


def rescale_size(height: int, width: int, scale: Sequence[int], keep_ratio: bool = True) -> tuple[int, int]:
    """(height, width) after mmseg's ``Resize``: ``mmcv.rescale_size`` with keep_ratio, else exactly ``scale``.

    ``scale`` is (w, h) as the configs write it; with keep_ratio only its long and short edge matter.
    """
    if not keep_ratio:
        return int(scale[1]), int(scale[0])
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def _taps(source: int, target: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps along one axis: first source index and the two fixed-point weights.

    As ``cv::resize`` computes them: the scale is ``1 / (target / source)`` in double, the source
    position ``(d + 0.5) * scale - 0.5`` is rounded to float, split into floor and fraction in
    float, and each weight is ``saturate_cast<short>(w * 2048)`` (round half to even). Columns are
    clamped at the borders (weight 1 on the edge pixel); rows keep their weights and clip the row
    index instead (``clamp=False``).
    """
    scale = 1.0 / (target / source)
    position = ((np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if clamp:
        low, high = first < 0, first >= source - 1
        fraction[low | high] = 0
        first = np.clip(first, 0, source - 1)
    one = np.float32(1 << _COEF_BITS)
    w0 = np.rint((np.float32(1) - fraction) * one).astype(np.int64)
    w1 = np.rint(fraction * one).astype(np.int64)
    return first, w0, w1


def cv2_resize_linear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` of uint8 images (B, C, H, W), on their device.

    Integer arithmetic throughout, as OpenCV's fixed-point path: a horizontal pass with 11-bit
    weights (exact in int32), then a vertical pass back to uint8 as OpenCV's SIMD loop and its
    matching scalar tail compute it, ``((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2 >> 2``.
    An exact 2x reduction takes OpenCV's INTER_AREA shortcut, ``(a + b + c + d + 2) >> 2``; the
    same size is a copy. Checked bit for bit against opencv-python-headless 4.5.5, 4.10 and 5.0
    (channel order does not matter: every element uses the same formula).
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("cv2_resize_linear takes uint8 images (B, C, H, W)")
    batch, channels, height, width = images.shape
    new_h, new_w = int(size[0]), int(size[1])
    if (new_h, new_w) == (height, width):
        return images.clone()
    if height == 2 * new_h and width == 2 * new_w:
        total = images.reshape(batch, channels, new_h, 2, new_w, 2).to(torch.int16).sum((3, 5), dtype=torch.int16)
        return ((total + 2) >> 2).to(torch.uint8)
    x = images.to(torch.int32)
    device = images.device
    col0, a0, a1 = (torch.from_numpy(t).to(device) for t in _taps(width, new_w, clamp=True))
    col1 = torch.clamp(col0 + 1, max=width - 1)
    row_first, b0, b1 = _taps(height, new_h, clamp=False)
    rows0 = torch.from_numpy(np.clip(row_first, 0, height - 1)).to(device)
    rows1 = torch.from_numpy(np.clip(row_first + 1, 0, height - 1)).to(device)
    b0 = torch.from_numpy(b0).to(device=device, dtype=torch.int32).view(1, 1, -1, 1)
    b1 = torch.from_numpy(b1).to(device=device, dtype=torch.int32).view(1, 1, -1, 1)
    horizontal = x.index_select(3, col0) * a0.to(torch.int32) + x.index_select(3, col1) * a1.to(torch.int32)
    s0, s1 = horizontal.index_select(2, rows0), horizontal.index_select(2, rows1)
    out = ((((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16) + 2) >> 2
    return out.clamp_(0, 255).to(torch.uint8)


def upsample_two_step(logits: torch.Tensor, input_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """mmseg's two resizes: ``encode_decode`` to the network input size, then ``inference`` to the image size."""
    if tuple(logits.shape[-2:]) != tuple(input_size):
        logits = F.interpolate(logits, size=tuple(input_size), mode="bilinear", align_corners=False)
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class MmsegPipeline:
    """Model inputs for uint8 RGB batches (B, 3, H, W) already on the device, as mmseg's test pipeline makes them."""

    def __init__(self, pipeline: dict, device: torch.device, resize: bool = True):
        self.pipeline, self.device, self.resize = pipeline, device, resize
        # mmcv.imnormalize: cv2.subtract / cv2.multiply of the float32 image by float64 scalars (computed in
        # double, stored as float32): mean = the float32 config value, 1 / std in double. The image is uint8,
        # so the result is a table of 3 x 256 values, looked up per pixel.
        mean = np.asarray(pipeline["mean"], dtype=np.float32).astype(np.float64)[:, None]
        stdinv = 1 / np.asarray(pipeline["std"], dtype=np.float32).astype(np.float64)[:, None]
        centred = (np.arange(256, dtype=np.float64)[None] - mean).astype(np.float32).astype(np.float64)
        self.table = torch.from_numpy((centred * stdinv).astype(np.float32).reshape(-1)).to(device)
        self.offsets = torch.arange(3, dtype=torch.int32, device=device).view(1, 3, 1, 1) * 256

    def geometry(self, height: int, width: int) -> tuple[int, int]:
        """The network input size for an image of ``height`` x ``width``."""
        if not self.resize:
            return height, width
        return rescale_size(height, width, self.pipeline["img_scale"], self.pipeline["keep_ratio"])

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        resized = cv2_resize_linear(images, self.geometry(*images.shape[-2:]))
        index = resized.to(torch.int32) + self.offsets
        return {"pixel_values": self.table.index_select(0, index.reshape(-1)).view(index.shape)}
