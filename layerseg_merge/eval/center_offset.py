"""Panoptic decoding for a SegFormer with a center/offset head (Panoptic-DeepLab style).

A model whose config has ``panoptic_head = {"type": "center_offset", "num_classes": N,
"thing_ids": [...], "offset_scale": S}`` outputs N semantic logits, a center heatmap and
two offsets (dy, dx, in units of S pixels) toward the instance center. Stuff classes become
one segment each; thing pixels are grouped by the nearest predicted center, and each group
takes its majority class (the smallest class id among ties). Vectorised: look-up tables and
joint histograms, no loop over full-size masks, so it runs at the device's speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layerseg_merge.eval.metrics import VOID, Segment


def find_centers(heat: torch.Tensor, threshold: float, window: int, max_instances: int) -> torch.Tensor:
    """(K, 2) positions of the local maxima of ``heat`` above ``threshold``, at most ``max_instances``.

    A plateau (equal values within ``window``, common once logits are rounded to bf16/fp16 under
    ``--amp``) gives one center, its first pixel in raster order, not one per pixel: otherwise a
    low-precision run would split instances that the float32 run keeps whole.
    """
    peaks = (heat == F.max_pool2d(heat[None, None], window, 1, window // 2)[0, 0]) & (heat > threshold)
    positions = peaks.nonzero()
    if len(positions) > 1:
        # every candidate is the maximum of its window, so a neighbouring candidate can only be a tie
        near = (positions[:, None, :] - positions[None, :, :]).abs().amax(-1) <= window // 2
        earlier = torch.ones_like(near).tril(-1)  # nonzero() lists them in raster order
        positions = positions[~(near & earlier).any(1)]
    if len(positions) > max_instances:  # the strongest; ties by raster order
        order = torch.sort(heat[positions[:, 0], positions[:, 1]], descending=True, stable=True).indices
        positions = positions[order[:max_instances]]
    return positions


def decode(logits: torch.Tensor, spec: dict, label_to_category: dict[int, int], threshold: float = 0.3,
           window: int = 7, max_instances: int = 32) -> tuple[torch.Tensor, list[Segment]]:
    """One image's logits (N + 3, H, W), at the image size -> COCO ids (VOID = 0) and segments."""
    n, scale = spec["num_classes"], float(spec.get("offset_scale", 1.0))
    device = logits.device
    things = torch.tensor(spec["thing_ids"], device=device)
    semantic = logits[:n].argmax(0)
    heat = logits[n]
    centers = find_centers(heat, threshold, window, max_instances).float()
    is_thing = torch.isin(semantic, things)
    segments: list[Segment] = []
    # Stuff: one segment per class present, in class order.
    stuff_counts = torch.bincount(semantic[~is_thing], minlength=n)
    stuff_classes = (stuff_counts > 0).nonzero().flatten().tolist()
    table = torch.zeros(n, dtype=torch.int64, device=device)
    for new_id, cls in enumerate(stuff_classes, start=1):
        table[cls] = new_id
        segments.append(Segment(new_id, label_to_category[cls]))
    ids = torch.where(is_thing, torch.zeros_like(semantic), table[semantic])
    if len(centers) and bool(is_thing.any()):
        ys, xs = is_thing.nonzero().unbind(1)
        to_y = ys + logits[n + 1, ys, xs] * scale
        to_x = xs + logits[n + 2, ys, xs] * scale
        nearest = ((to_y[:, None] - centers[:, 0]) ** 2 + (to_x[:, None] - centers[:, 1]) ** 2).argmin(1)
        classes = semantic[ys, xs]
        votes = torch.bincount(nearest * n + classes, minlength=len(centers) * n).view(len(centers), n)
        groups = (votes.sum(1) > 0).nonzero().flatten()
        majority = votes[groups].argmax(1)  # first maximum: the smallest class among ties
        group_ids = torch.zeros(len(centers), dtype=torch.int64, device=device)
        group_ids[groups] = torch.arange(len(segments) + 1, len(segments) + 1 + len(groups), device=device)
        for cls in majority.tolist():
            segments.append(Segment(len(segments) + 1, label_to_category[cls]))
        ids[ys, xs] = group_ids[nearest]
    ids[ids == 0] = VOID
    return ids, segments
