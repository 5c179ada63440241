"""Folders: ``folder:ROOT`` (images/ + labels/ at the same relative paths, classes.txt optional) and
``images:ROOT`` (unlabelled images, for recalibration and label-free sweeps); both read whole."""

from __future__ import annotations

from pathlib import Path

from layerseg_merge.eval.datasets.base import (
    DatasetKind,
    ImageDataset,
    SemanticDataset,
    _class_names,
    _image_files,
    _no_images,
    _pairs,
)
from layerseg_merge.eval.images import DatasetError


def image_folder(root: Path) -> ImageDataset:
    """Every image under ``root`` (or ``root/images`` when there is one), recursively."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder of images")
    base = root / "images" if (root / "images").is_dir() else root
    images = [(str(p.relative_to(base)), p) for p in _image_files(base)]
    if not images:
        raise _no_images(base, "images:ROOT reads every image under ROOT (or ROOT/images)")
    return ImageDataset(images)



def folder_dataset(root: Path) -> SemanticDataset:
    """``ROOT/images/**`` + ``ROOT/labels/**`` (same relative path and stem, label as .png)."""
    images, labels = root / "images", root / "labels"
    for folder in (images, labels):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing; a folder dataset has images/ and labels/")
    names_file = root / "classes.txt"
    names = _class_names(names_file) if names_file.exists() else None
    pairs = _pairs(images, lambda p: (labels / p.relative_to(images)).with_suffix(".png"),
                   "a folder dataset has images/**/NAME.* and labels/**/NAME.png")
    return SemanticDataset(pairs, [n for n in names if n] if names else None)



def _named(kind: str):
    return lambda path: Path(path.rstrip("/")).name or kind  # a folder is named by itself


KIND = DatasetKind("folder", "ROOT", _named("folder"), ("semantic",),
                   lambda path, split, task: folder_dataset(Path(path)), reads_split=False)
IMAGES_KIND = DatasetKind("images", "ROOT", _named("images"), ("images",),
                          lambda path, split, task: image_folder(Path(path)), reads_split=False)
