"""Throughput of `layerseg eval` on generated 1024x2048 data, and the share spent in the forward pass.

    python benchmarks/eval_throughput.py [--images 8] [--device auto] [--batch-size 2] [--amp off]

The model is a random SegFormer-B0 (19 classes) whose processor resizes to 512x1024.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from layerseg_merge.eval.evaluate import evaluate


def build(root: Path, images: int) -> tuple[Path, Path]:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    model = root / "segformer_b0"
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(SegformerConfig(num_labels=19)).save_pretrained(model)
    SegformerImageProcessor(size={"height": 512, "width": 1024}).save_pretrained(model)
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (1024, 2048, 3), dtype=np.uint8)).save(data / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 19, (1024, 2048), dtype=np.uint8)).save(data / "labels" / f"{i}.png")
    return model, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, data = build(Path(tmp), args.images)
        evaluate(model, f"folder:{data}", device=args.device, batch_size=args.batch_size, amp=args.amp,
                 workers=args.workers, progress=False)  # warm-up (kernels, caches)
        report = evaluate(model, f"folder:{data}", device=args.device, batch_size=args.batch_size,
                          amp=args.amp, workers=args.workers, progress=False)
    timing = report["timing"]
    card = torch.cuda.get_device_name() if timing["device"].startswith("cuda") else "CPU"
    print(f"device {timing['device']} ({card}), batch {args.batch_size}, amp {args.amp}, "
          f"{timing['images']} images of 1024x2048")
    print(f"throughput      {timing['images'] / timing['seconds']:.2f} images/s")
    print(f"forward share   {timing['forward_seconds'] / timing['seconds']:.0%} of wall time")


if __name__ == "__main__":
    main()
