"""Cityscapes: ``cityscapes:ROOT`` (leftImg8bit/ + gtFine/, the 19 train ids) and ``cityscapes-panoptic:ROOT``
(cityscapesScripts' createPanopticImgs output), and the train-id label reader ACDC and Dark Zurich share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from layerseg_merge.eval.datasets.base import DatasetKind, PanopticDataset, SemanticDataset, _image_files, _pairs
from layerseg_merge.eval.datasets.coco_panoptic import load_coco_panoptic
from layerseg_merge.eval.images import DatasetError

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
# Cityscapes labelIds of the 19 train classes, in train-id order (cityscapesScripts labels.py).
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
LABEL_ID_TO_TRAIN_ID = np.full(256, 255, dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID[list(CITYSCAPES_LABEL_IDS)] = np.arange(19, dtype=np.uint8)

def _train_id_dataset(images: Path, labels: Path, image_suffix: str, label_stem: str, layout: str) -> SemanticDataset:
    """Cityscapes-style labels next to ``*IMAGE_SUFFIX`` images: ``*{label_stem}labelTrainIds.png`` (the 19 train
    ids) where the first image has one, else ``*{label_stem}labelIds.png`` mapped to them."""
    for folder in (images, labels):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing; {layout}")
    files = _image_files(images, f"*{image_suffix}")
    if not files:
        raise DatasetError(f"{images}: no *{image_suffix} images; {layout}")
    stem = str(files[0].relative_to(images)).removesuffix(image_suffix)
    use_train_ids = (labels / f"{stem}{label_stem}labelTrainIds.png").exists()
    suffix = f"{label_stem}labelTrainIds.png" if use_train_ids else f"{label_stem}labelIds.png"

    def label_for(image: Path) -> Path:
        return labels / (str(image.relative_to(images)).removesuffix(image_suffix) + suffix)

    pairs = _pairs(images, label_for, layout, files)
    return SemanticDataset(pairs, list(CITYSCAPES_CLASSES), None if use_train_ids else LABEL_ID_TO_TRAIN_ID)


CITYSCAPES_LAYOUT = "a Cityscapes root has leftImg8bit/{split}/CITY/*_leftImg8bit.png and gtFine/{split}/CITY/"


def cityscapes_dataset(root: Path, split: str, task: str):
    if task == "panoptic":
        return cityscapes_panoptic_dataset(root, split)
    return _train_id_dataset(root / "leftImg8bit" / split, root / "gtFine" / split, "_leftImg8bit.png", "_gtFine_",
                             CITYSCAPES_LAYOUT.format(split=split))


def _cityscapes_panoptic_json(root: Path, split: str) -> tuple[Path, bool]:
    """The JSON of cityscapesScripts' createPanopticImgs for ``split`` (its PNG folder: the same name without .json),
    and whether it was made with --use-train-id.

    The converter writes ``cityscapes_panoptic_{split}.json`` (category ids = label ids) or, with --use-train-id,
    ``cityscapes_panoptic_{split}_trainId.json`` (train ids) into its output folder: gtFine/ by default,
    gtFine_panoptic/ in EDAPS (susaha/edaps README, cityscapesscripts/preparation/createPanopticImgs.py). The first
    found is read: gtFine/ before gtFine_panoptic/, label ids before train ids.
    """
    for folder in ("gtFine", "gtFine_panoptic"):
        for suffix in ("", "_trainId"):
            path = root / folder / f"cityscapes_panoptic_{split}{suffix}.json"
            if path.exists():
                return path, bool(suffix)
    raise DatasetError(f"{root / 'gtFine' / f'cityscapes_panoptic_{split}.json'}: missing; the Cityscapes panoptic "
                       "file of cityscapesScripts' createPanopticImgs: make it with csCreatePanopticImgs (it writes "
                       f"into gtFine/), or keep it in {root / 'gtFine_panoptic'}/ as EDAPS does")


def cityscapes_panoptic_dataset(root: Path, split: str) -> PanopticDataset:
    """cityscapesScripts' panoptic ground truth as its createPanopticImgs (2.2.0, 2.3.0) writes it:
    ``gtFine/cityscapes_panoptic_{split}.json`` + its PNG folder, or the same in ``gtFine_panoptic/`` (EDAPS), or
    the ``_trainId`` pair of --use-train-id (:func:`_cityscapes_panoptic_json`).

    Categories are Cityscapes label ids (7 road ... 33 bicycle; train ids 0..18 in a ``_trainId`` file). An image
    is found by its id CITY_SEQ_FRAME in ``leftImg8bit/{split}/CITY/CITY_SEQ_FRAME_leftImg8bit.png``: the file
    names the converter gives images (CITY_SEQ_FRAME_gtFine_leftImg8bit.png, no city folder) name no file.
    """
    images = root / "leftImg8bit" / split
    if not images.is_dir():
        raise DatasetError(f"{images}: missing; {CITYSCAPES_LAYOUT.format(split=split)}")
    annotations, train_ids = _cityscapes_panoptic_json(root, split)
    png_dir = annotations.with_suffix("")
    if not png_dir.is_dir():
        raise DatasetError(f"{png_dir}: missing; the folder of the panoptic PNGs that {annotations.name} lists, "
                           "as cityscapesScripts' createPanopticImgs writes it beside the JSON")
    by_id = {p.name.removesuffix("_leftImg8bit.png"): p for p in _image_files(images, "*_leftImg8bit.png")}

    def locate(annotation: dict, name: str | None) -> Path:
        image_id = str(annotation["image_id"])
        named = Path(name or "").name.removesuffix("_leftImg8bit.png").removesuffix("_gtFine")
        found = by_id.get(image_id) or by_id.get(named)
        if found is None:
            expected = images / image_id.split("_")[0] / f"{image_id}_leftImg8bit.png"
            raise DatasetError(f"{expected}: image of annotation {annotation['file_name']} not found; "
                               f"{CITYSCAPES_LAYOUT.format(split=split)}")
        return found

    dataset = load_coco_panoptic(images, annotations, png_dir, locate)
    ids, what = (range(19), "train id") if train_ids else (CITYSCAPES_LABEL_IDS, "label id")
    strange = sorted(set(dataset.categories) - set(ids))
    if strange:
        remedy = "regenerate it with --use-train-id" if train_ids else "regenerate it without --use-train-id"
        raise DatasetError(f"{annotations}: category id {strange[0]} is not a Cityscapes {what} of the 19 classes "
                           f"({min(ids)}..{max(ids)}); {remedy}")
    return dataset



KIND = DatasetKind("cityscapes", "ROOT", "Cityscapes", ("semantic", "panoptic"),
                   lambda path, split, task: cityscapes_dataset(Path(path), split, task))
PANOPTIC_KIND = DatasetKind("cityscapes-panoptic", "ROOT", "Cityscapes panoptic", ("panoptic",),
                            lambda path, split, task: cityscapes_panoptic_dataset(Path(path), split),
                            hub_type="cityscapes")
