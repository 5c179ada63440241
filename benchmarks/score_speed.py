"""Per-image metric update time at Cityscapes resolution (1024x2048), excluding PNG decoding.

    python benchmarks/score_speed.py [--repeats 20] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch

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


if __name__ == "__main__":
    main()
