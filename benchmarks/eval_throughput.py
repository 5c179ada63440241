"""Throughput of `layerseg eval` against the model's forward-only limit, measured in one run.

    python benchmarks/eval_throughput.py [--device auto] [--preset gpu|cpu] [--sections ...] [--json OUT]

Builds random-weight models and generated data, then for each section prints the forward-only limit
(GPU-resident input, the forward pass plus upsampling and argmax), `evaluate()` with the device fast path,
`evaluate()` with the transformers processor on the CPU (the previous pipeline), and the ratios.
  gpu preset: SegFormer-B5 (19 classes) on 1024x2048 images, bf16 batch 4 and fp32 batch 1; Mask2Former
              Swin-T panoptic bf16 batch 2; `--slide 1024,768` batched vs one crop at a time; --compile.
  cpu preset: SegFormer-B0 at 512x1024 and a small Mask2Former, for the CPU figures.
Throughput excludes the DataLoader workers' start-up (printed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerseg_merge.eval.evaluate import evaluate  # noqa: E402
from layerseg_merge.eval.inference import autocast, pick_device  # noqa: E402
from layerseg_merge.eval.options import DataOptions, InferenceOptions  # noqa: E402

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
THINGS = set(range(11, 19))
PRESETS = {
    "gpu": dict(size=(1024, 2048), images=64, backbone="b5", processor_size=(1024, 2048), workers=8,
                panoptic="swin-t", panoptic_images=48, slide=(1024, 768)),
    "cpu": dict(size=(512, 1024), images=8, backbone="b0", processor_size=(512, 1024), workers=2,
                panoptic="tiny", panoptic_images=4, slide=(512, 384)),
}


def _scene(index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A street-like image (bands and boxes with texture) and its 19-class label / panoptic instances."""
    rng = np.random.default_rng(index)
    label = np.zeros((height, width), np.uint8)
    instance = np.zeros((height, width), np.int32)
    bands = rng.permutation(11)[:6]
    for band, cls in enumerate(bands):
        label[band * height // 6:(band + 1) * height // 6] = cls
    for k in range(60):
        h, w = int(rng.integers(height // 40, height // 6)), int(rng.integers(width // 60, width // 10))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        label[y:y + h, x:x + w] = 11 + k % 8
        instance[y:y + h, x:x + w] = k + 1
    palette = rng.integers(0, 255, (19, 3))
    image = palette[label] + rng.integers(-12, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), np.where(rng.random(label.shape) < 0.01, 255, label), instance


def _write(args):
    index, root, height, width = args
    image, label, instance = _scene(index, height, width)
    Image.fromarray(image).save(root / "images" / f"{index:04d}.png")
    Image.fromarray(label.astype(np.uint8)).save(root / "labels" / f"{index:04d}.png")
    semantic = np.where(label == 255, 0, label).astype(np.int64)
    ids = np.where(instance > 0, 1000 * (semantic + 1) + instance, 1000 * (semantic + 1))
    ids[label == 255] = 0
    segments = []
    for value in np.unique(ids):
        if value:
            segments.append({"id": int(value), "category_id": int(value // 1000 - 1), "iscrowd": 0})
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "panoptic" / f"{index:04d}.png")
    return {"image_id": index, "file_name": f"{index:04d}.png", "segments_info": segments}


def make_data(root: Path, count: int, size: tuple[int, int]) -> tuple[str, str]:
    for sub in ("images", "labels", "panoptic"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        annotations = list(pool.map(_write, [(i, root, *size) for i in range(count)]))
    categories = [{"id": i, "name": name, "isthing": int(i in THINGS)} for i, name in enumerate(CLASSES)]
    (root / "panoptic.json").write_text(json.dumps({
        "images": [{"id": a["image_id"], "file_name": a["file_name"]} for a in annotations],
        "annotations": annotations, "categories": categories}))
    return f"folder:{root}", f"coco-panoptic:{root / 'images'},{root / 'panoptic.json'},{root / 'panoptic'}"


def build_segformer(path: Path, backbone: str, processor_size: tuple[int, int]) -> Path:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    sizes = {"b5": dict(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768),
             "b0": dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256)}[backbone]
    torch.manual_seed(0)
    config = SegformerConfig(num_labels=19, id2label=dict(enumerate(CLASSES)), **sizes)
    SegformerForSemanticSegmentation(config).save_pretrained(path)
    SegformerImageProcessor(size={"height": processor_size[0], "width": processor_size[1]}).save_pretrained(path)
    return path


def build_mask2former(path: Path, which: str, size: tuple[int, int]) -> Path:
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    if which == "swin-t":
        backbone = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                              out_features=["stage1", "stage2", "stage3", "stage4"])
        config = Mask2FormerConfig(backbone_config=backbone, num_labels=19, id2label=dict(enumerate(CLASSES)))
    else:
        backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                              out_features=["stage1", "stage2", "stage3", "stage4"])
        config = Mask2FormerConfig(backbone_config=backbone, num_labels=19, id2label=dict(enumerate(CLASSES)),
                                   feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
                                   dim_feedforward=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                                   num_queries=20)
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(path)
    Mask2FormerImageProcessor(size={"shortest_edge": size[0], "longest_edge": size[1]},
                              do_reduce_labels=False).save_pretrained(path)
    return path


def forward_limit(model_dir: Path, device: torch.device, batch: int, amp: str, size: tuple[int, int],
                  label_size: tuple[int, int], universal: bool, repeats: int) -> float:
    """Images per second of the forward pass alone (+ upsample + argmax for semantic models), input on the GPU."""
    from transformers import AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation

    loader = AutoModelForUniversalSegmentation if universal else AutoModelForSemanticSegmentation
    model = loader.from_pretrained(model_dir).to(device).eval()
    pixels = torch.randn(batch, 3, *size, device=device)
    inputs = {"pixel_values": pixels}
    if universal:
        inputs["pixel_mask"] = torch.ones(batch, *size, dtype=torch.int64, device=device)

    def step():
        with torch.inference_mode(), autocast(device, amp):
            out = model(**inputs)
            if not universal:
                F.interpolate(out.logits.float(), size=label_size, mode="bilinear", align_corners=False).argmax(1)

    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    return batch * repeats / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(report: dict) -> float:
    timing = report["timing"]
    return timing["images"] / timing["seconds"]


def score(model_dir, data: str, device, task: str = "semantic", limit: int | None = None, workers: int = 2,
          **infer) -> dict:
    """evaluate() without a progress bar; ``infer``: the InferenceOptions besides the device."""
    return evaluate(model_dir, DataOptions(data, limit=limit, workers=workers), task,
                    InferenceOptions(device=str(device), **infer), progress=False)


def run_eval(model_dir, data, device, **options) -> dict:
    score(model_dir, data, device, **(options | {"limit": 8}))  # warm-up
    return score(model_dir, data, device, **options)


def demo_argmax_identical(device: torch.device) -> bool:
    """--compile in fp32 on the shipped demo split: every argmax map equal to the eager one."""
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.resources import DEMO_ASSETS

    paths = sorted((DEMO_ASSETS / "target_test" / "images").glob("*.png"))
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    model = DEMO_ASSETS / "models" / "dacs"
    maps = []
    for compile_model in (True, False):
        segmenter = Segmenter(model, InferenceOptions(device=str(device), compile=compile_model))
        maps.append(torch.cat([torch.stack(segmenter.semantic(images[i:i + 16], [tuple(images.shape[-2:])] * 16))
                               for i in range(0, len(images), 16)]))
    return bool(torch.equal(maps[0], maps[1]))


def line(name: str, value: float, limit: float | None = None, extra: str = "") -> None:
    share = f"  ({value / limit:.0%} of the limit)" if limit else ""
    print(f"  {name:52s} {value:7.2f} img/s{share}{extra}", flush=True)


def semantic_section(segformer: Path, folder: str, device: torch.device, preset: dict, batch: int,
                     amp: str) -> dict:
    """The forward-only limit and evaluate() with either preprocessing, for the semantic SegFormer."""
    if device.type == "cpu" and amp == "bf16":
        amp, batch = "off", 2
    workers = preset["workers"]
    print(f"SegFormer-{preset['backbone'].upper()} semantic, {amp}, batch {batch}, {workers} workers:")
    limit = forward_limit(segformer, device, batch, amp, preset["processor_size"], preset["size"], False, 8)
    fast = run_eval(segformer, folder, device, batch_size=batch, amp=amp, workers=workers)
    slow = run_eval(segformer, folder, device, batch_size=batch, amp=amp, workers=workers, preprocess="processor")
    line("forward-only limit", limit)
    line("evaluate(), device preprocessing", throughput(fast), limit,
         f"; start-up {fast['timing']['startup_seconds']:.1f} s")
    line("evaluate(), processor on the CPU (the previous path)", throughput(slow), limit)
    print(f"  mIoU fast {100 * fast['mIoU']:.3f} vs processor {100 * slow['mIoU']:.3f}")
    return {"limit": limit, "fast": throughput(fast), "processor": throughput(slow), "miou_fast": fast["mIoU"],
            "miou_processor": slow["mIoU"], "amp": amp, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: gpu on CUDA, else cpu")
    parser.add_argument("--sections", default="semantic,panoptic,slide,fp32,compile")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    device = pick_device(args.device)
    preset = dict(PRESETS[args.preset or ("gpu" if device.type == "cuda" else "cpu")])
    if args.images:
        preset["images"] = args.images
    sections = args.sections.split(",")
    card = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {device} ({card}), torch {torch.__version__}, images {preset['size'][0]}x{preset['size'][1]}",
          flush=True)
    figures: dict = {"device": card, "preset": args.preset or ("gpu" if device.type == "cuda" else "cpu")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        folder, coco = make_data(root / "data", preset["images"], preset["size"])
        print(f"generated {preset['images']} images in {time.perf_counter() - started:.0f} s", flush=True)
        segformer = build_segformer(root / "segformer", preset["backbone"], preset["processor_size"])
        workers = preset["workers"]
        label_size = preset["size"]
        if "semantic" in sections:
            figures["semantic"] = semantic_section(segformer, folder, device, preset, 4, "bf16")
        if "panoptic" in sections:
            mask2former = build_mask2former(root / "mask2former", preset["panoptic"], preset["size"])
            amp, batch = ("bf16", 2) if device.type == "cuda" else ("off", 2)
            print(f"Mask2Former ({preset['panoptic']}) panoptic, {amp}, batch {batch}, {workers} workers:")
            padded = tuple(-(-s // 32) * 32 for s in preset["size"])
            limit = forward_limit(mask2former, device, batch, amp, padded, label_size, True, 6)
            options = dict(task="panoptic", batch_size=batch, amp=amp, workers=workers)
            subset = min(preset["panoptic_images"], preset["images"])
            score(mask2former, coco, device, limit=4, **options)  # warm-up
            fast = score(mask2former, coco, device, limit=subset, **options)
            slow = score(mask2former, coco, device, limit=subset, preprocess="processor", **options)
            line("forward-only limit (forward pass alone)", limit)
            line("evaluate(), device preprocessing", throughput(fast), limit)
            line("evaluate(), processor on the CPU (the previous path)", throughput(slow), limit)
            print(f"  PQ fast {100 * fast['All']['pq']:.3f} vs processor {100 * slow['All']['pq']:.3f}")
            figures["panoptic"] = {"limit": limit, "fast": throughput(fast), "processor": throughput(slow),
                                   "pq_fast": fast["All"]["pq"], "pq_processor": slow["All"]["pq"]}
        if "slide" in sections:
            crop, stride = preset["slide"]
            amp = "bf16" if device.type == "cuda" else "off"
            subset = max(4, preset["images"] // 2)
            print(f"SegFormer-{preset['backbone'].upper()} --slide {crop},{stride}, {amp}:")
            options = dict(amp=amp, workers=workers, slide=(crop, stride), limit=subset)
            score(segformer, folder, device, batch_size=4, **(options | {"limit": 2}))
            batched = score(segformer, folder, device, batch_size=4, **options)
            single = score(segformer, folder, device, batch_size=1, **options)
            line("crops batched (4 per forward)", throughput(batched), None,
                 f"; forward {batched['timing']['forward_seconds']:.1f} s of {batched['timing']['seconds']:.1f} s")
            line("one crop at a time (the previous slide)", throughput(single))
            print(f"  ratio {throughput(batched) / throughput(single):.2f}x; mIoU {100 * batched['mIoU']:.3f} vs "
                  f"{100 * single['mIoU']:.3f}")
            figures["slide"] = {"batched": throughput(batched), "single": throughput(single),
                                "miou_batched": batched["mIoU"], "miou_single": single["mIoU"]}
        if "fp32" in sections:
            figures["fp32"] = semantic_section(segformer, folder, device, preset, 1, "off")
        if "compile" in sections and device.type == "cuda":
            print(f"SegFormer-{preset['backbone'].upper()} --compile, bf16, batch 4:")
            options = dict(amp="bf16", workers=workers, batch_size=4)
            started = time.perf_counter()
            score(segformer, folder, device, compile=True, limit=8, **options)
            warm = time.perf_counter() - started
            compiled = score(segformer, folder, device, compile=True, **options)
            eager = score(segformer, folder, device, **options)
            line("eager", throughput(eager))
            line("compiled", throughput(compiled), None, f"; first run incl. compilation {warm:.0f} s")
            print(f"  ratio {throughput(compiled) / throughput(eager):.2f}x; mIoU {100 * compiled['mIoU']:.3f} vs "
                  f"{100 * eager['mIoU']:.3f}")
            figures["compile"] = {"eager": throughput(eager), "compiled": throughput(compiled),
                                  "miou_compiled": compiled["mIoU"], "miou_eager": eager["mIoU"], "warmup_s": warm}
            figures["compile"]["demo_fp32_identical"] = demo_argmax_identical(device)
            print(f"  demo split, fp32: compiled argmax maps identical to eager: "
                  f"{figures['compile']['demo_fp32_identical']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
