"""What every dataset kind shares: the dataset classes, the file discovery that reads regular files only, and
:class:`DatasetKind`, the registry entry.

Samples are dicts with ``name`` (relative path), ``image`` (H, W, 3 uint8 numpy) and either ``label``
(H, W int64 class indices, a torch tensor) or ``panoptic`` (H, W int64 segment ids) + ``segments``.
Decoding happens in DataLoader workers (:mod:`layerseg_merge.eval.batching`); torch is imported when a
sample is read, so that the kinds' table costs nothing to import (``layerseg eval --help``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerseg_merge.eval.images import (
    IMAGE_SUFFIXES,
    DatasetError,
    label_array,
    read_image,
    read_panoptic_ids,
    regular_file,
)
from layerseg_merge.eval.metrics import Segment


@dataclass(frozen=True)
class DatasetKind:
    """One dataset layout, ``NAME:PATH`` on the command line: what it serves and how it is read.

    ``opener(path, split, task)`` builds the dataset (``task``: one of ``tasks``; ``images`` is served by every
    kind, from its labelled images); ``reads_split``: ``--split`` chooses what is read (else the data is read whole);
    ``paths(path)``: the files and folders the PATH names (for the output checks); ``config(path)``: what the
    PATH chooses beyond paths (ACDC conditions, Mapillary's id table), recorded on model cards.
    """

    name: str
    usage: str
    title: str | Callable[[str], str]  # how model cards name the data (of the PATH given)
    tasks: tuple[str, ...]
    opener: Callable[[str, str, str], object]  # a map-style dataset
    reads_split: bool = True
    paths: Callable[[str], tuple[str, ...]] = lambda path: (path,) if path else ()
    config: Callable[[str], str | None] = lambda path: None
    hub_type: str | None = None  # the dataset's type in Hugging Face model-index results (default: the name)

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.usage}"

    def card(self, path: str) -> tuple[str, str, str | None]:
        """(dataset type, dataset name, config) of ``NAME:path`` for Hugging Face model-index results."""
        return self.hub_type or self.name, self.title(path) if callable(self.title) else self.title, self.config(path)


def label_tensor(label: np.ndarray):
    import torch

    return torch.from_numpy(label_array(label))


def _check_size(name: str, image: np.ndarray, label: np.ndarray) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError(f"{name}: image is {image.shape[1]}x{image.shape[0]} but its label is "
                           f"{label.shape[1]}x{label.shape[0]}")


def _image_files(folder: Path, pattern: str = "*") -> list[Path]:
    """The images (by suffix) under ``folder``, recursively and sorted; folders named like images are passed over."""
    return [regular_file(p, "an image") for p in sorted(folder.rglob(pattern))
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]


@dataclass(frozen=True)
class PanopticEntry:
    image: Path
    png: Path
    segments: tuple[Segment, ...]


class SemanticDataset:
    """Image / class-index label pairs."""

    task = "semantic"

    def __init__(self, pairs: list[tuple[str, Path, Path]], class_names: list[str] | None,
                 label_map: np.ndarray | None = None, id_range: tuple[int, str] | None = None):
        """``label_map``: raw label value -> class index; ``id_range``: (largest raw id, what the ids are)."""
        if not pairs:
            raise DatasetError("no image/label pairs found")
        self.pairs, self.class_names, self.label_map, self.id_range = pairs, class_names, label_map, id_range

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        name, image_path, label_path = self.pairs[index]
        image = read_image(image_path, "RGB")
        label = read_image(label_path)
        if label.ndim != 2:
            raise DatasetError(f"{label_path}: a label must be a single-channel class-index PNG")
        if self.id_range is not None and label.size and int(label.max()) > self.id_range[0]:
            raise DatasetError(f"{label_path}: label value {int(label.max())} is not {self.id_range[1]} "
                               f"(0..{self.id_range[0]})")
        if self.label_map is not None:
            label = self.label_map[label]
        _check_size(name, image, label)
        return {"name": name, "image": image, "label": label_tensor(label)}


class ImageDataset:
    """Unlabelled images (for BatchNorm recalibration and label-free ranking)."""

    task = "images"

    def __init__(self, images: list[tuple[str, Path]]):
        if not images:
            raise DatasetError("no images found")
        self.images, self.class_names = images, None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        name, path = self.images[index]
        return {"name": name, "image": read_image(path, "RGB")}


class PanopticDataset:
    """Images with COCO panoptic ground truth (PNG ids + JSON segments)."""

    task = "panoptic"

    def __init__(self, entries: list[tuple[str, PanopticEntry]], categories: dict[int, dict]):
        if not entries:
            raise DatasetError("no annotated images found")
        self.entries, self.categories = entries, categories
        self.class_names = [categories[c]["name"] for c in sorted(categories)]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        name, entry = self.entries[index]
        image = read_image(entry.image, "RGB")
        import torch

        ids = torch.from_numpy(read_panoptic_ids(entry.png))
        _check_size(name, image, ids)
        return {"name": name, "image": image, "panoptic": ids,
                "segments": entry.segments}


def _no_images(folder: Path, layout: str) -> DatasetError:
    return DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its subfolders; {layout}")


def _pairs(image_dir: Path, label_for, layout: str, images: list[Path] | None = None) -> list[tuple[str, Path, Path]]:
    """(name, image, label) of every image under ``image_dir`` (or of ``images``), its label ``label_for(image)``."""
    pairs = []
    for image in _image_files(image_dir) if images is None else images:
        label = label_for(image)
        if not label.exists():
            raise DatasetError(f"{image}: no label file (expected {label}); every image needs one")
        pairs.append((str(image.relative_to(image_dir)), image, regular_file(label, "a label")))
    if not pairs:
        raise _no_images(image_dir, layout)
    return pairs


def _class_names(path: Path) -> list[str]:
    """The lines of a UTF-8 ``classes.txt`` (a byte-order mark is dropped)."""
    try:
        return regular_file(path, "classes.txt").read_bytes().decode("utf-8-sig").split("\n")
    except OSError as error:
        raise DatasetError(f"{path}: cannot read it ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8, one "
                           "class name per line") from error
