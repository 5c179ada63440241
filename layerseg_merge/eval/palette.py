"""Class colours for painted predictions: Cityscapes' own for its 19 classes, a fixed distinct palette otherwise.

The Cityscapes colours are those of cityscapesScripts' ``helpers/labels.py`` (the `color` of each of the 19
evaluated classes), so a painted Cityscapes, ACDC or Dark Zurich prediction reads like every paper's figure.
Any other class gets the next colour of a fixed sequence (golden-ratio hue steps at three lightness levels),
so a class keeps its colour from one image and one run to the next.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

from layerseg_merge.eval.class_alignment import normalised

# cityscapesScripts helpers/labels.py: name -> color of the 19 classes that are not ignoreInEval.
CITYSCAPES_COLOURS: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "sky": (70, 130, 180),
    "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100),
    "train": (0, 80, 100), "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32),
}


def distinct_colour(index: int) -> tuple[int, int, int]:
    """The ``index``-th colour of a fixed sequence: hues a golden-ratio turn apart, lightness cycling over three
    levels, so neighbours in the sequence differ in hue and brightness."""
    hue = (index * 0.6180339887498949) % 1.0
    lightness = (0.45, 0.62, 0.32)[index % 3]
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, 0.85)
    return round(red * 255), round(green * 255), round(blue * 255)


def class_colours(names: Sequence[str]) -> list[tuple[int, int, int]]:
    """A colour per class name: Cityscapes' for its classes (case, ``_`` and ``-`` aside), the fixed sequence for
    the others (in order, each taking the next colour no class of the list has yet)."""
    known = {normalised(name): colour for name, colour in CITYSCAPES_COLOURS.items()}
    colours = [known.get(normalised(name)) for name in names]
    taken = {colour for colour in colours if colour is not None}
    step = 0
    for index, colour in enumerate(colours):
        if colour is None:
            while distinct_colour(step) in taken:
                step += 1
            colours[index] = distinct_colour(step)
            taken.add(colours[index])
            step += 1
    return colours
