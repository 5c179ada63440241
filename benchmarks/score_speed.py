"""Per-image metric update time at Cityscapes resolution (1024x2048), and PNG decoding: Pillow vs kornia-rs.

    python benchmarks/score_speed.py [--repeats 20] [--device auto]

Metric lines: one image's update, wall and CPU time per call (best of the repeats, after a warm-up), on numpy
arrays (`layerseg score`) and on torch tensors on `--device` (`layerseg eval`; CPU tensors are scored by numpy).
Panoptic maps: stuff bands and 60 thing rectangles (flat regions: a few runs of equal ids per row), given as id
maps or as the PNG's RGB pixels (what `layerseg score` passes), and the same maps speckled (half the pixels
replaced: the per-pixel path). The decoding lines time `layerseg_merge.eval.images` on three seeded 1024x2048 PNGs
written by Pillow (a COCO panoptic id map, a class-index label, a photo-like RGB image) with each decoder in turn
(LAYERSEG_PNG_DECODER=pillow is the decoder before kornia-rs), best of the repeats, and check that both give the same
array. The last line says what limits `layerseg score panoptic` on such PNGs: decoding or the per-pixel pass.
It prints no target: the figures depend on the machine; every line states the cores, the load and wall vs CPU.
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


def timed(function, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best wall and CPU ms of one call over the repeats, after a warm-up (CUDA: synchronised)."""
    function()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), time.process_time()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return min(walls) * 1000, min(cpus) * 1000


def best_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def conditions() -> str:
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return f"{len(cores)} usable cores, load {' '.join(f'{v:.2f}' for v in os.getloadavg())}"


def id_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def decoder_figures(repeats: int) -> float:
    """Decoding ms per 1024x2048 PNG with Pillow and with the default decoder, the arrays compared; returns the
    default decoder's ms for the panoptic PNG read as `layerseg score` reads it."""
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
            # what `layerseg score panoptic` reads: kornia-rs' RGB pixels as they are (no id map)
            pixels_ms = best_ms(lambda: images.read_panoptic_pixels(root / "panoptic.png"), repeats)
        finally:
            if previous is None:
                os.environ.pop(images.DECODER_VARIABLE, None)
            else:
                os.environ[images.DECODER_VARIABLE] = previous
            images.png_decoder.cache_clear()
    names = list(results)
    print(f"decoding, ms per 1024x2048 PNG (wall, best of the repeats; {conditions()}): " + "  vs  ".join(names))
    for case in cases:
        values = [results[n][case] for n in names]
        same = all(v[1].dtype == values[0][1].dtype and np.array_equal(v[1], values[0][1]) for v in values)
        line = "  ".join(f"{n} {v[0]:7.2f}" for n, v in zip(names, values))
        ratio = f"  ({values[0][0] / values[-1][0]:.1f}x)" if len(values) > 1 else ""
        print(f"  {case:40s} {line}{ratio}; identical arrays: {same}")
    print(f"  {'panoptic PNG -> pixels (read_panoptic_pixels)':40s} {names[-1]} {pixels_ms:7.2f}")
    return pixels_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    generator = torch.Generator().manual_seed(0)
    height, width = 1024, 2048
    print(f"{height}x{width}, torch device {device}, torch threads {torch.get_num_threads()}; before: {conditions()}")
    label = torch.randint(0, 19, (height, width), generator=generator)
    label[:16] = 255
    prediction = torch.randint(0, 19, (height, width), generator=generator)
    semantic = SemanticMetric(19)
    cases = {
        "semantic, numpy uint8 (decoded PNGs: score)": (semantic.image_stats, prediction.numpy().astype(np.uint8),
                                                        label.numpy().astype(np.uint8)),
        "semantic, numpy int64": (semantic.image_stats, prediction.numpy(), label.numpy()),
        f"semantic, torch int64 on {device} (eval)": (semantic.image_stats, prediction.to(device), label.to(device)),
    }
    gt, gt_segments = panoptic_image(generator, height, width)
    pred, pred_segments = panoptic_image(generator, height, width)
    speckled = pred.clone()
    noise = torch.rand(speckled.shape, generator=generator) < 0.5
    ids = torch.tensor([s.id for s in pred_segments])
    speckled[noise] = ids[torch.randint(0, len(ids), (int(noise.sum()),), generator=generator)]
    panoptic = PanopticMetric({c: c >= 12 for c in range(1, 20)})
    flat = (pred.numpy().astype(np.int32), gt.numpy().astype(np.int32))
    cases |= {
        "panoptic, numpy int32 ids": (flat[0], flat[1]),
        "panoptic, numpy RGB pixels (score)": (id_rgb(flat[0]), id_rgb(flat[1])),
        f"panoptic, torch int64 ids on {device} (eval)": (pred.to(device), gt.to(device)),
        "panoptic, speckled, numpy RGB pixels": (id_rgb(speckled.numpy()), id_rgb(flat[1])),
    }
    figures = {}
    for name, case in cases.items():
        if name.startswith("panoptic"):
            p, g = case
            work = lambda p=p, g=g: panoptic.image_stats(p, pred_segments, g, gt_segments)  # noqa: E731
        else:
            work = lambda f=case[0], p=case[1], g=case[2]: f(p, g)  # noqa: E731
        figures[name] = timed(work, args.repeats, device)
        wall, cpu = figures[name]
        print(f"  {name:48s} {wall:7.2f} ms wall {cpu:7.2f} ms CPU per image")
    print(f"  ({len(gt_segments)} GT / {len(pred_segments)} predicted segments; after: {conditions()})")
    decoding = decoder_figures(args.repeats)
    pixels = figures["panoptic, numpy RGB pixels (score)"][0]
    print(f"per pair of such panoptic PNGs (layerseg score, {conditions()}): decoding both "
          f"{2 * decoding:.2f} ms + the per-pixel pass {pixels:.2f} ms (wall): decoding is "
          f"{100 * 2 * decoding / (2 * decoding + pixels):.0f}% of it")


if __name__ == "__main__":
    main()
