"""Panoptic decoding for a SegFormer with a center/offset head (Panoptic-DeepLab style).

A model whose config has ``panoptic_head = {"type": "center_offset", "num_classes": N,
"thing_ids": [...], "offset_scale": S}`` outputs N semantic logits, a center heatmap and
two offsets (dy, dx, in units of S pixels) toward the instance center. Stuff classes become
one segment each; thing pixels are grouped by the nearest predicted center, and each group
takes its majority class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layerseg_merge.eval.metrics import VOID, Segment


def decode(logits: torch.Tensor, spec: dict, label_to_category: dict[int, int], threshold: float = 0.3,
           window: int = 7, max_instances: int = 32) -> tuple[torch.Tensor, list[Segment]]:
    """One image's logits (N + 3, H, W), at the image size -> COCO ids (VOID = 0) and segments."""
    n, scale = spec["num_classes"], float(spec.get("offset_scale", 1.0))
    things = torch.tensor(spec["thing_ids"], device=logits.device)
    semantic = logits[:n].argmax(0)
    heat = logits[n]
    peaks = (heat == F.max_pool2d(heat[None, None], window, 1, window // 2)[0, 0]) & (heat > threshold)
    centers = peaks.nonzero().float()
    if len(centers) > max_instances:
        centers = centers[heat[peaks].topk(max_instances).indices]
    ids = torch.full_like(semantic, VOID)
    segments: list[Segment] = []
    is_thing = torch.isin(semantic, things)
    for cls in semantic[~is_thing].unique().tolist():
        segments.append(Segment(len(segments) + 1, label_to_category[cls]))
        ids[(semantic == cls) & ~is_thing] = segments[-1].id
    if len(centers) and is_thing.any():
        ys, xs = is_thing.nonzero().unbind(1)
        to_y = ys + logits[n + 1, ys, xs] * scale
        to_x = xs + logits[n + 2, ys, xs] * scale
        nearest = ((to_y[:, None] - centers[:, 0]) ** 2 + (to_x[:, None] - centers[:, 1]) ** 2).argmin(1)
        for k in nearest.unique().tolist():
            member = nearest == k
            cls = int(semantic[ys[member], xs[member]].mode().values)
            segments.append(Segment(len(segments) + 1, label_to_category[cls]))
            ids[ys[member], xs[member]] = segments[-1].id
    return ids, segments
