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


class Stitcher:
    """Window logits averaged where windows overlap, added a few windows at a time (mmseg's slide_inference)."""

    def __init__(self, size: tuple[int, int], scale: int = 1):
        self.size, self.scale = (size[0] // scale, size[1] // scale), scale
        self.total: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def add(self, pieces: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> None:
        """Window logits (len(boxes) * B, K, h, w), window-major, of the windows ``boxes``."""
        batch = pieces.shape[0] // len(boxes)
        if self.total is None:
            self.total = pieces.new_zeros(batch, pieces.shape[1], *self.size)
            self.count = pieces.new_zeros(1, 1, *self.size)
        for index, box in enumerate(boxes):
            y1, x1, y2, x2 = (value // self.scale for value in box)
            self.total[:, :, y1:y2, x1:x2] += pieces[index * batch:(index + 1) * batch]
            self.count[:, :, y1:y2, x1:x2] += 1

    def result(self) -> torch.Tensor:
        """(B, K, H/scale, W/scale)."""
        return self.total / self.count


def stitch(pieces: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]], size: tuple[int, int],
           scale: int = 1) -> torch.Tensor:
    """Average overlapping window logits (len(boxes) * B, K, h, w), window-major, into (B, K, H/scale, W/scale)."""
    stitcher = Stitcher(size, scale)
    stitcher.add(pieces, boxes)
    return stitcher.result()
