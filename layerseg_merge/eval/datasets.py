"""Standard dataset layouts: Cityscapes, COCO panoptic, and a plain image/label folder.

A dataset spec is ``KIND:PATH`` (see :func:`open_dataset`). Samples are dicts with
``name`` (relative path), ``image`` (H, W, 3 uint8 numpy) and either ``label``
(H, W int64 class indices) or ``panoptic`` (H, W int64 segment ids) + ``segments``.
Decoding happens in DataLoader workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from layerseg_merge.eval.images import IMAGE_SUFFIXES, DatasetError, label_array, read_image, read_panoptic_ids
from layerseg_merge.eval.metrics import Segment

__all__ = ["IMAGE_SUFFIXES", "DatasetError", "open_dataset", "read_image", "read_panoptic_ids"]

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
# Cityscapes labelIds of the 19 train classes, in train-id order (cityscapesScripts labels.py).
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
LABEL_ID_TO_TRAIN_ID = np.full(256, 255, dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID[list(CITYSCAPES_LABEL_IDS)] = np.arange(19, dtype=np.uint8)


def label_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(label_array(label))


def _check_size(name: str, image: np.ndarray, label: np.ndarray) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError(f"{name}: image is {image.shape[1]}x{image.shape[0]} but its label is "
                           f"{label.shape[1]}x{label.shape[0]}")


@dataclass(frozen=True)
class PanopticEntry:
    image: Path
    png: Path
    segments: tuple[Segment, ...]


class SemanticDataset(torch.utils.data.Dataset):
    """Image / class-index label pairs."""

    task = "semantic"

    def __init__(self, pairs: list[tuple[str, Path, Path]], class_names: list[str] | None,
                 label_map: np.ndarray | None = None):
        if not pairs:
            raise DatasetError("no image/label pairs found")
        self.pairs, self.class_names, self.label_map = pairs, class_names, label_map

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        name, image_path, label_path = self.pairs[index]
        image = read_image(image_path, "RGB")
        label = read_image(label_path)
        if label.ndim != 2:
            raise DatasetError(f"{label_path}: a label must be a single-channel class-index PNG")
        if self.label_map is not None:
            label = self.label_map[label]
        _check_size(name, image, label)
        return {"name": name, "image": image, "label": label_tensor(label)}


class ImageDataset(torch.utils.data.Dataset):
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


def image_folder(root: Path) -> ImageDataset:
    """Every image under ``root`` (or ``root/images`` when there is one), recursively."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder of images")
    base = root / "images" if (root / "images").is_dir() else root
    return ImageDataset([(str(p.relative_to(base)), p) for p in sorted(base.rglob("*"))
                         if p.suffix.lower() in IMAGE_SUFFIXES])


class PanopticDataset(torch.utils.data.Dataset):
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
        ids = torch.from_numpy(read_panoptic_ids(entry.png))
        _check_size(name, image, ids)
        return {"name": name, "image": image, "panoptic": ids,
                "segments": entry.segments}


def _pairs(image_dir: Path, label_dir: Path, label_for) -> list[tuple[str, Path, Path]]:
    pairs = []
    for image in sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label = label_for(image)
        if label is None or not label.exists():
            raise DatasetError(f"{image}: no label file (expected {label}); every image needs one")
        pairs.append((str(image.relative_to(image_dir)), image, label))
    return pairs


def folder_dataset(root: Path) -> SemanticDataset:
    """``ROOT/images/**`` + ``ROOT/labels/**`` (same relative path and stem, label as .png)."""
    images, labels = root / "images", root / "labels"
    for folder in (images, labels):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing; a folder dataset has images/ and labels/")
    names_file = root / "classes.txt"
    names = names_file.read_text().split("\n") if names_file.exists() else None
    pairs = _pairs(images, labels, lambda p: (labels / p.relative_to(images)).with_suffix(".png"))
    return SemanticDataset(pairs, [n for n in names if n] if names else None)


def load_coco_panoptic(images: Path, annotations: Path, png_dir: Path) -> PanopticDataset:
    try:
        data = json.loads(annotations.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{annotations}: cannot read COCO panoptic JSON ({error})") from error
    categories = {c["id"]: c for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data.get("images", [])}
    entries = []
    for annotation in data["annotations"]:
        image_name = files.get(annotation["image_id"], Path(annotation["file_name"]).stem + ".jpg")
        image = images / image_name
        if not image.exists():
            alternatives = list(images.glob(Path(image_name).stem + ".*"))
            if not alternatives:
                raise DatasetError(f"{image}: image of annotation {annotation['file_name']} not found")
            image = alternatives[0]
        png = png_dir / annotation["file_name"]
        if not png.exists():
            raise DatasetError(f"{png}: panoptic PNG listed in {annotations.name} not found")
        segments = []
        for s in annotation["segments_info"]:
            if s["category_id"] not in categories:
                raise DatasetError(f"{png}: segment {s['id']} has unknown category id {s['category_id']}")
            segments.append(Segment(s["id"], s["category_id"], bool(s.get("iscrowd", 0))))
        entries.append((annotation["file_name"], PanopticEntry(image, png, tuple(segments))))
    return PanopticDataset(entries, categories)


def cityscapes_dataset(root: Path, split: str, task: str):
    images = root / "leftImg8bit" / split
    if not images.is_dir():
        raise DatasetError(f"{images}: missing; a Cityscapes root has leftImg8bit/{split} and gtFine/{split}")
    if task == "panoptic":
        return load_coco_panoptic(images, root / "gtFine" / f"cityscapes_panoptic_{split}.json",
                                  root / "gtFine" / f"cityscapes_panoptic_{split}")
    first = next(images.rglob("*_leftImg8bit.png"), None)
    if first is None:
        raise DatasetError(f"{images}: no *_leftImg8bit.png images")
    stem = str(first.relative_to(images)).replace("_leftImg8bit.png", "")
    use_train_ids = (root / "gtFine" / split / f"{stem}_gtFine_labelTrainIds.png").exists()
    suffix = "_gtFine_labelTrainIds.png" if use_train_ids else "_gtFine_labelIds.png"
    labels = root / "gtFine" / split

    def label_for(image: Path) -> Path:
        return labels / str(image.relative_to(images)).replace("_leftImg8bit.png", suffix)

    pairs = _pairs(images, labels, label_for)
    return SemanticDataset(pairs, list(CITYSCAPES_CLASSES), None if use_train_ids else LABEL_ID_TO_TRAIN_ID)


def open_dataset(spec: str, split: str = "val", task: str = "semantic"):
    """``cityscapes:ROOT``, ``coco-panoptic:IMAGES,JSON,PNG_DIR``, ``folder:ROOT`` or ``images:ROOT``.

    ``task="images"`` gives the images of any of them without labels (``images:ROOT`` needs none).
    """
    kind, _, path = spec.partition(":")
    if task == "images":
        if kind == "images":
            return image_folder(Path(path))
        labelled = open_dataset(spec, split, "panoptic" if kind == "coco-panoptic" else "semantic")
        items = labelled.pairs if isinstance(labelled, SemanticDataset) else [
            (name, entry.image) for name, entry in labelled.entries]
        return ImageDataset([(item[0], item[1]) for item in items])
    if kind == "images":
        raise DatasetError("images:ROOT has no labels; it serves recalibration and --unsupervised only")
    if kind == "folder":
        if task != "semantic":
            raise DatasetError("folder datasets are semantic; use coco-panoptic for panoptic data")
        return folder_dataset(Path(path))
    if kind == "cityscapes":
        return cityscapes_dataset(Path(path), split, task)
    if kind == "coco-panoptic":
        parts = path.split(",")
        if len(parts) != 3:
            raise DatasetError("coco-panoptic needs IMAGES,JSON,PNG_DIR (comma-separated)")
        return load_coco_panoptic(*(Path(p) for p in parts))
    raise DatasetError(f"unknown dataset kind {kind!r}; use cityscapes:ROOT, "
                       "coco-panoptic:IMAGES,JSON,PNG_DIR, folder:ROOT or images:ROOT")


@dataclass(frozen=True)
class FailedSample:
    """A sample that could not be read: the error travels as a value (see :class:`CarryErrors`)."""

    error_type: type
    message: str

    def raise_error(self):
        raise self.error_type(self.message)


class CarryErrors(torch.utils.data.Dataset):
    """Return a dataset's own errors as values instead of raising them in a DataLoader worker.

    A worker re-raises errors in the main process wrapped in "Caught X in DataLoader worker
    process 0" and a worker traceback; carried as a value, the message reaches the user as is.
    """

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from layerseg_merge.eval.metrics import LabelError

        try:
            return self.dataset[index]
        except (DatasetError, LabelError) as error:
            return FailedSample(type(error), str(error))


def checked(sample):
    """``sample``, or its error raised in this (the main) process."""
    if isinstance(sample, FailedSample):
        sample.raise_error()
    return sample


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    return [t.contiguous() for t in tensors]


def collate_batch(samples: list) -> dict:
    """A batch for the device: uint8 images (B, 3, H, W) and targets, stacked where sizes agree (else lists).

    Runs in the DataLoader workers, so the main process only copies ready tensors; a sample
    that failed to load travels as ``failed``.
    """
    failed = next((s for s in samples if isinstance(s, FailedSample)), None)
    if failed is not None:
        return {"failed": failed, "names": []}
    batch = {
        "names": [s["name"] for s in samples],
        "images": _stack([torch.from_numpy(np.ascontiguousarray(s["image"])).permute(2, 0, 1) for s in samples]),
    }
    if "label" in samples[0]:
        batch["labels"] = _stack([s["label"] for s in samples])
    elif "panoptic" in samples[0]:
        batch["panoptic"] = _stack([s["panoptic"] for s in samples])
        batch["segments"] = [s["segments"] for s in samples]
    return batch
