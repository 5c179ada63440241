"""Per-image metric update time at Cityscapes resolution (1024x2048), and PNG decoding: Pillow vs kornia-rs.

    python benchmarks/score_speed.py [--repeats 20] [--device auto]

The decoding lines time `layerseg_merge.eval.images` on three seeded 1024x2048 PNGs written by Pillow
(a COCO panoptic id map, a class-index label, a photo-like RGB image) with each decoder in turn
(LAYERSEG_PNG_DECODER=pillow is the decoder before kornia-rs), best of the repeats, and check that
both give the same array.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from layerseg_merge.eval.inference import pick_device
from layerseg_merge.eval.metrics import PanopticMetric, Segment, SemanticMetric


def panoptic_image(generator, height, width, segments=60, device="cpu"):
    """A Cityscapes-like panoptic map: stuff bands plus rectangular thing instances."""
    ids = torch.zeros(height, width, dtype=torch.int64)
    infos = []
    for k, cat in enumerate(range(1, 12)):  # 11 stuff classes as horizontal bands
        ids[k * height // 11:(k + 1) * height // 11] = cat * 1000
        infos.append(Segment(cat * 1000, cat))
    for k in range(segments):
        cat = 12 + k % 8
        h, w = (int(v) for v in torch.randint(20, 200, (2,), generator=generator))
        y, x = int(torch.randint(0, height - h, (1,), generator=generator)), \
            int(torch.randint(0, width - w, (1,), generator=generator))
        ids[y:y + h, x:x + w] = cat * 1000 + k + 1
        infos.append(Segment(cat * 1000 + k + 1, cat))
    ids[:8] = 0
    present = set(torch.unique(ids).tolist())
    return ids.to(device), [s for s in infos if s.id in present]


def timed(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def best_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def decoder_figures(repeats: int) -> None:
    """Decoding ms per 1024x2048 PNG with Pillow and with the default decoder, the arrays compared."""
    from layerseg_merge.eval import images

    generator = torch.Generator().manual_seed(1)
    ids, _ = panoptic_image(generator, 1024, 2048)
    ids = ids.numpy()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:2048]
    photo = np.stack([(x / 8) % 256, (y / 4) % 256, ((x + y) / 16) % 256], -1) + rng.normal(0, 12, (1024, 2048, 3))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "panoptic.png")
        Image.fromarray((ids % 34).astype(np.uint8)).save(root / "label.png")
        Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(root / "photo.png")
        cases = {"panoptic PNG -> ids (read_panoptic_ids)": (images.read_panoptic_ids, root / "panoptic.png"),
                 "label PNG, 8-bit grey (read_label)": (images.read_label, root / "label.png"),
                 "photo PNG, RGB (read_image, RGB)": (lambda p: images.read_image(p, "RGB"), root / "photo.png")}
        previous = os.environ.get(images.DECODER_VARIABLE)
        results: dict[str, dict[str, tuple[float, np.ndarray]]] = {}
        try:
            for decoder in ("pillow", "auto"):
                os.environ[images.DECODER_VARIABLE] = decoder
                images.png_decoder.cache_clear()
                name = "Pillow" if images.png_decoder() is None else "kornia-rs"
                results[name] = {case: (best_ms(lambda f=f, p=p: f(p), repeats), f(p))
                                 for case, (f, p) in cases.items()}
        finally:
            if previous is None:
                os.environ.pop(images.DECODER_VARIABLE, None)
            else:
                os.environ[images.DECODER_VARIABLE] = previous
            images.png_decoder.cache_clear()
    names = list(results)
    print("decoding, ms per 1024x2048 PNG (best of the repeats): " + "  vs  ".join(names))
    for case in cases:
        values = [results[n][case] for n in names]
        same = all(v[1].dtype == values[0][1].dtype and np.array_equal(v[1], values[0][1]) for v in values)
        line = "  ".join(f"{n} {v[0]:7.2f}" for n, v in zip(names, values))
        ratio = f"  ({values[0][0] / values[-1][0]:.1f}x)" if len(values) > 1 else ""
        print(f"  {case:40s} {line}{ratio}; identical arrays: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    generator = torch.Generator().manual_seed(0)
    height, width = 1024, 2048
    label = torch.randint(0, 19, (height, width), generator=generator).to(device)
    label[:16] = 255
    prediction = torch.randint(0, 19, (height, width), generator=generator).to(device)
    semantic = SemanticMetric(19)
    semantic_ms = timed(lambda: semantic.update(prediction, label), args.repeats, device)
    label8, prediction8 = label.to(torch.uint8), prediction.to(torch.uint8)
    semantic8_ms = timed(lambda: semantic.update(prediction8, label8), args.repeats, device)
    gt = panoptic_image(generator, height, width, device=device)
    pred = panoptic_image(generator, height, width, device=device)
    panoptic = PanopticMetric({c: c >= 12 for c in range(1, 20)})
    panoptic_ms = timed(lambda: panoptic.update(pred[0], pred[1], gt[0], gt[1]), args.repeats, device)
    print(f"device {device}, {height}x{width}, threads {torch.get_num_threads()}")
    print(f"semantic update  {semantic_ms:7.2f} ms/image, int64 maps (model argmax; target <= 5 ms on CPU)")
    print(f"semantic update  {semantic8_ms:7.2f} ms/image, uint8 maps (decoded PNGs)")
    print(f"panoptic update  {panoptic_ms:7.2f} ms/image ({len(gt[1])} GT / {len(pred[1])} predicted segments; "
          "target <= 20 ms on CPU)")
    decoder_figures(args.repeats)


if __name__ == "__main__":
    main()
