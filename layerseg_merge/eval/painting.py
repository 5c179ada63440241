"""Painted predictions for people (``layerseg eval --show-dir DIR [--show N]``).

Per image (all of them, or ``N`` spread evenly over the split): the image with the prediction blended in the
classes' colours (:mod:`layerseg_merge.eval.palette`), the ground truth beside it, and an error map (wrong pixels
red, ignored ones grey, correct ones a dimmed grey copy of the image), above a legend of the class names.
Panoptic: every segment a shade of its category's colour, with white outlines where segments meet.

The predictions and labels are those the metric scored, taken from ``evaluate``'s batch loop. The panels are
composed on the device the model runs on, in a background thread (:mod:`layerseg_merge.eval.background`) that
also copies them to the host and encodes the JPEGs, so the loop does not wait for it. Under torchrun each rank
paints its own images into one folder (:mod:`layerseg_merge.eval.rank_output`); rank 0 writes ``index.json``
(which image is in which file) and moves the folder into place when every rank is done.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from layerseg_merge.eval.background import BackgroundWork, one_torch_thread
from layerseg_merge.eval.palette import class_colours
from layerseg_merge.eval.rank_output import shared_folder

INDEX = "index.json"
WRONG, IGNORED, OUTLINE, SEPARATOR = (255, 40, 40), (150, 150, 150), (255, 255, 255), 4
MIN_HEIGHT = 192  # smaller images are enlarged (by whole factors) to at least this many rows
# JPEG: a twentieth of PNG's encoding time and a fifth of its size for a painted Cityscapes image (0.04 s vs 0.8 s
# for 1174 x 6152 pixels), which keeps the painting off the critical path; the colours stay within a few levels.
JPEG_QUALITY = 92


def spread(count: int | None, total: int) -> list[int]:
    """``count`` positions of ``total`` spread evenly from the first to the last (all with None or more)."""
    if count is None or count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def is_painted_folder(path: Path) -> bool:
    """A folder written by ``--show-dir`` before: its ``index.json`` lists every file in it."""
    try:
        listed = {entry["file"] for entry in json.loads((path / INDEX).read_text(encoding="utf-8"))["images"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    present = {str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir()}
    return present <= listed | {INDEX}


def check_show(show_dir: str | Path | None, show: int | None) -> None:
    """Refuse a ``show`` count that is not a whole number >= 1, or one without ``show_dir``."""
    from layerseg_merge.io.errors import option

    flag = option("--show ", "show=")
    if show is None:
        return
    if isinstance(show, bool) or not isinstance(show, int) or show < 1:
        raise ValueError(f"{flag}{show!r}: give the number of images to paint, at least 1 (or leave it out to paint "
                         "all)")
    if show_dir is None:
        raise ValueError(f"{flag}{show} needs {option('--show-dir DIR', 'show_dir=DIR')}, the folder the painted "
                         "images go to")


def check_show_dir(path: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse, before any work, a ``--show-dir`` that is, contains or lies inside an input or the current directory,
    or that holds files other than a previous painting."""
    from layerseg_merge.io.output import check_replaceable, check_target

    check_target(Path(path), inputs)
    check_replaceable(Path(path), True, "dir", is_painted_folder)


# ------------------------------------------------------------------------------------------------ legend


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: its bitmap font
        return ImageFont.load_default()


def _wrapped(text: str, font, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` pixels, broken between words."""
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if lines[-1] and font.getlength(joined) > width:
            lines.append(word)
        else:
            lines[-1] = joined
    return lines


def legend(names: Sequence[str], colours: Sequence[tuple[int, int, int]], width: int, caption: str) -> np.ndarray:
    """A white strip ``width`` pixels wide: ``caption``, then a swatch and the name of every class, in rows."""
    size = max(12, min(40, width // 60))
    font = _font(size)
    pad, swatch, line = size // 2, size, size + size // 2
    captions = _wrapped(caption, font, width - 2 * pad)
    rows: list[list[tuple[str, tuple[int, int, int], int]]] = [[]]
    x = pad
    for name, colour in zip(names, colours):
        extent = swatch + pad // 2 + int(font.getlength(name)) + pad
        if rows[-1] and x + extent > width:
            rows.append([])
            x = pad
        rows[-1].append((name, colour, x))
        x += extent
    strip = Image.new("RGB", (width, pad + line * (len(captions) + len(rows)) + pad // 2), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for row, text in enumerate(captions):
        draw.text((pad, pad + line * row), text, fill=(0, 0, 0), font=font)
    for row, entries in enumerate(rows, start=len(captions)):
        y = pad + line * row
        for name, colour, x in entries:
            draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=tuple(colour), outline=(0, 0, 0))
            draw.text((x + swatch + pad // 2, y - size // 8), name, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


# ------------------------------------------------------------------------------------------------ panels
# Panels are uint8 (H, W, 3) tensors on the model's device, composed with integer arithmetic.


def _colour(colour: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8, device=like.device)


def blend(image: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``image`` (H, W, 3) with ``colours`` (H, W, 3) blended in half and half (rounded up), uint8."""
    return ((image.short() + colours.short() + 1) >> 1).to(torch.uint8)


def _fill(panel: torch.Tensor, where: torch.Tensor, colour: tuple[int, int, int]) -> torch.Tensor:
    return torch.where(where[..., None], _colour(colour, panel), panel)


def error_map(image: torch.Tensor, wrong: torch.Tensor, ignored: torch.Tensor) -> torch.Tensor:
    """Correct pixels a dimmed grey copy of ``image`` (40 % of its mean), ``wrong`` ones red, ``ignored`` ones grey."""
    grey = (image.int().sum(-1, keepdim=True) * 2 // 15).to(torch.uint8).expand(-1, -1, 3)
    return _fill(_fill(grey, ignored, IGNORED), wrong & ~ignored, WRONG)


def outlines(ids: torch.Tensor) -> torch.Tensor:
    """Pixels where the segment id changes to the right or below (boolean, (H, W))."""
    edge = torch.zeros_like(ids, dtype=torch.bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def shade(colour: tuple[int, int, int], order: int) -> tuple[int, int, int]:
    """The ``order``-th segment of a category: the category's colour first, then shades toward white and black
    in turn, each step a golden-ratio fraction apart."""
    if order == 0:
        return tuple(colour)
    amount = 0.2 + 0.45 * ((order * 0.6180339887498949) % 1.0)
    target = 255 if order % 2 else 0
    return tuple(round(c + (target - c) * amount) for c in colour)


def enlarged(panel: torch.Tensor) -> torch.Tensor:
    """A panel of fewer than :data:`MIN_HEIGHT` rows enlarged by a whole factor (each pixel a block), so that small
    images stay legible beside their legend."""
    factor = -(-MIN_HEIGHT // panel.shape[0])
    return panel.repeat_interleave(factor, 0).repeat_interleave(factor, 1) if factor > 1 else panel


def _canvas(panels: list[torch.Tensor], legend_of: Callable[[int], np.ndarray]) -> np.ndarray:
    """Panels side by side (white gaps), the legend strip (``legend_of(width)``) below; uint8 (H, W, 3) on the host."""
    panels = [enlarged(panel) for panel in panels]
    gap = torch.full((panels[0].shape[0], SEPARATOR, 3), 255, dtype=torch.uint8, device=panels[0].device)
    top = torch.cat([piece for panel in panels for piece in (panel, gap)][:-1], dim=1).cpu().numpy()
    return np.concatenate([top, legend_of(top.shape[1])], axis=0)


class Painter:
    """Paints the images at ``chosen`` positions of the split into ``folder``; fed by ``evaluate``'s batch loop
    (:meth:`bind` with the task's scoring, then :meth:`add` per batch)."""

    def __init__(self, folder: Path, chosen: Iterable[int], rank: int = 0, world: int = 1):
        self.folder, self.chosen, self.rank, self.world = folder, set(chosen), rank, world
        self.seen = 0  # images of this rank so far: the next one is at position rank + seen * world
        self.written: list[tuple[int, str, str]] = []  # (position, image name, file)
        self.work = BackgroundWork(context=one_torch_thread)
        self._strips: dict[int, np.ndarray] = {}
        self.names: list[str] = []
        self.colours: list[tuple[int, int, int]] = []

    def bind(self, scoring) -> None:
        """Take the class names (in the metric's order) or the categories from the task's scoring."""
        self.panoptic = hasattr(scoring, "categories")
        if self.panoptic:
            self.categories = dict(scoring.categories)
            ids = sorted(self.categories)
            self.names = [str(self.categories[c].get("name", c)) for c in ids]
            self.colours = class_colours(self.names)
            self.colour_of = dict(zip(ids, self.colours))
        else:
            self.names = list(scoring.alignment.names)
            self.colours = class_colours(self.names)
            self.ignore_index = scoring.metric.ignore_index

    def _strip(self, width: int) -> np.ndarray:
        if width not in self._strips:
            caption = ("prediction | ground truth | errors: red wrong, grey ignored"
                       + (" (white lines: segment outlines)" if self.panoptic else ""))
            self._strips[width] = legend(self.names, self.colours, width, caption)
        return self._strips[width]

    def add(self, names: Sequence[str], images, results: Sequence) -> None:
        """One batch: its image names, uint8 images ((B, 3, H, W) or a list) and the scoring's per-image results."""
        for index, (name, result) in enumerate(zip(names, results)):
            position = self.rank + self.seen * self.world
            self.seen += 1
            if position in self.chosen:
                file = str(Path(name).with_suffix(".jpg"))
                self.written.append((position, name, file))
                self.work.submit(self._task(images[index], result, self.folder / file))

    def _task(self, image: torch.Tensor, result, path: Path) -> Callable[[], None]:
        def paint() -> None:
            canvas = self.paint_panoptic(image, *result) if self.panoptic else self.paint_semantic(image, *result)
            os.makedirs(path.parent, exist_ok=True)
            Image.fromarray(canvas).save(path, quality=JPEG_QUALITY, subsampling=0)  # 4:4:4, crisp class edges

        return paint

    def paint_semantic(self, image: torch.Tensor, prediction: torch.Tensor, label: torch.Tensor) -> np.ndarray:
        """Prediction, ground truth and error map of one image: uint8 (3, H, W), class indices of :attr:`names`
        (anything else: black)."""
        device = prediction.device
        image = image.to(device).permute(1, 2, 0)
        table = torch.tensor([*self.colours, (0, 0, 0)], dtype=torch.uint8, device=device)  # last: not scored
        count = len(self.colours)
        prediction, label = prediction.long(), label.to(device).long()
        ignored = label == self.ignore_index
        panels = [blend(image, table[prediction.clamp(0, count)]), blend(image, table[label.clamp(0, count)]),
                  error_map(image, prediction != label, ignored)]
        return _canvas(panels, self._strip)

    def _segments(self, ids: torch.Tensor, segments: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pixel: the segment's colour (shades of its category's) and its category id (0: VOID)."""
        device = ids.device
        keys = torch.tensor([0] + [s.id for s in segments], dtype=torch.int64, device=device)
        order: dict[int, int] = {}
        colours, categories = [(0, 0, 0)], [0]
        for segment in segments:
            seen = order.get(segment.category_id, 0)
            order[segment.category_id] = seen + 1
            colours.append(shade(self.colour_of.get(segment.category_id, (0, 0, 0)), seen))
            categories.append(-1 if segment.iscrowd else segment.category_id)
        sorted_keys, permutation = keys.sort()
        flat = ids.long()
        where = torch.searchsorted(sorted_keys, flat).clamp_(max=len(keys) - 1)
        index = torch.where(sorted_keys[where] == flat, permutation[where], torch.zeros_like(where))
        colour_table = torch.tensor(colours, dtype=torch.uint8, device=device)
        return colour_table[index], torch.tensor(categories, device=device)[index]

    def paint_panoptic(self, image: torch.Tensor, ids: torch.Tensor, segments: Sequence, gt_ids: torch.Tensor,
                       gt_segments: Sequence) -> np.ndarray:
        """Segments (shades of their category's colour, outlined), ground truth and errors of one image; an error
        is a pixel whose predicted category is not the ground truth's (VOID and crowd ground truth: ignored)."""
        device = ids.device
        image, gt_ids = image.to(device).permute(1, 2, 0), gt_ids.to(device)
        colours, category = self._segments(ids, segments)
        gt_colours, gt_category = self._segments(gt_ids, gt_segments)
        panels = [_fill(blend(image, colours), outlines(ids), OUTLINE),
                  _fill(blend(image, gt_colours), outlines(gt_ids), OUTLINE),
                  error_map(image, category != gt_category, gt_category <= 0)]
        return _canvas(panels, self._strip)


@contextlib.contextmanager
def painting(show_dir: str | Path | None, count: int | None, total: int, rank: int = 0, world: int = 1, *,
             inputs: Iterable[str | Path] = (), about: dict | None = None) -> Iterator[Painter | None]:
    """A :class:`Painter` writing into ``show_dir`` (None: no painting) for a split of ``total`` images; on a clean
    exit every rank's images are written, rank 0 adds ``index.json`` (``about`` + the images) and the folder
    replaces a previous painting in one step."""
    if show_dir is None:
        yield None
        return
    with shared_folder(show_dir, rank, world, inputs=inputs, overwrite=True, replaceable=is_painted_folder) as folder:
        painter = Painter(folder.staging, spread(count, total), rank, world)
        with painter.work:
            yield painter
        written = folder.gather(painter.written)
        if rank == 0:
            images = sorted(entry for part in written for entry in part)
            index = dict(about or {}) | {"images": [{"name": name, "file": file} for _, name, file in images]}
            (folder.staging / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        folder.commit()
