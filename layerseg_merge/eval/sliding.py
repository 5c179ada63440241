"""Sliding-window geometry shared by ``--slide`` inference and HRDA's test procedure (mmsegmentation's rules)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """mmseg's sliding-window grid along one axis: windows of ``crop`` every ``stride``, the last one clamped."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride, size - crop), 0) for i in range(count)]


def windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y1, x1, y2, x2) of every window over a ``height`` x ``width`` image."""
    return [(y, x, min(y + crop, height), min(x + crop, width))
            for y in window_starts(height, crop, stride) for x in window_starts(width, crop, stride)]


def stitch(pieces: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]], size: tuple[int, int],
           scale: int = 1) -> torch.Tensor:
    """Average overlapping window logits (len(boxes) * B, K, h, w), window-major, into (B, K, H/scale, W/scale)."""
    batch = pieces.shape[0] // len(boxes)
    total = pieces.new_zeros(batch, pieces.shape[1], size[0] // scale, size[1] // scale)
    count = pieces.new_zeros(1, 1, size[0] // scale, size[1] // scale)
    for index, (y1, x1, y2, x2) in enumerate(boxes):
        y1, x1, y2, x2 = y1 // scale, x1 // scale, y2 // scale, x2 // scale
        total[:, :, y1:y2, x1:x2] += pieces[index * batch:(index + 1) * batch]
        count[:, :, y1:y2, x1:x2] += 1
    return total / count
