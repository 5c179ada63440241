"""The images of a split and what names its classes, without its labels: what ``layerseg predict`` runs on.

The test splits of the UDA targets ship without ground truth (Cityscapes ``leftImg8bit/test``, ACDC's
``rgb_anon/CONDITION/test``, Dark Zurich's ``Dark_Zurich_test_anon_withoutGt.zip``), so the Cityscapes-style
kinds are listed here from their image layout alone, with the names and order their labelled datasets give
the same images; every other kind is opened as ``eval`` opens it and its labels are left aside. The classes are
the dataset's (the 19 Cityscapes train ids for the Cityscapes-style kinds, a folder's ``classes.txt``) and, for
panoptic predictions, its categories: the ground truth's where it has some, the Cityscapes label ids otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerseg_merge.eval.datasets import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_IDS, ImageDataset, dataset_kind
from layerseg_merge.eval.datasets.acdc import ACDC_CONDITIONS, _conditions
from layerseg_merge.eval.datasets.base import PanopticDataset, SemanticDataset, _image_files
from layerseg_merge.eval.images import DatasetError

# The 8 of the 19 Cityscapes classes that have instances (cityscapesScripts labels.py hasInstances), by train id.
CITYSCAPES_THINGS = frozenset(range(11, 19))
CITYSCAPES_STYLE = ("cityscapes", "cityscapes-panoptic", "acdc", "darkzurich")


def cityscapes_categories() -> dict[int, dict]:
    """The 19 Cityscapes classes as COCO panoptic categories, keyed by label id, as cityscapesScripts'
    createPanopticImgs writes them (without --use-train-id)."""
    return {label: {"id": label, "name": name, "isthing": int(train in CITYSCAPES_THINGS)}
            for train, (label, name) in enumerate(zip(CITYSCAPES_LABEL_IDS, CITYSCAPES_CLASSES))}


@dataclass(frozen=True)
class SplitImages:
    """``dataset`` (images only, names as the labelled dataset gives them), the dataset's class names (None:
    unnamed), its panoptic categories (id -> {name, isthing}; None: none known) and, per image name, the image id
    of its panoptic ground truth (None: derived from the name)."""

    dataset: ImageDataset
    class_names: list[str] | None
    categories: dict[int, dict] | None
    image_ids: dict[str, object] | None = None


def _listed(folder: Path, suffix: str, layout: str) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing; {layout}")
    images = [(str(p.relative_to(folder)), p) for p in _image_files(folder, f"*{suffix}")]
    if not images:
        raise DatasetError(f"{folder}: no *{suffix} images; {layout}")
    return images


def _cityscapes_style(kind: str, path: str, split: str) -> list[tuple[str, Path]]:
    """The images of a Cityscapes, ACDC or Dark Zurich split, named as their labelled datasets name them."""
    if kind in ("cityscapes", "cityscapes-panoptic"):
        return _listed(Path(path) / "leftImg8bit" / split, "_leftImg8bit.png",
                       f"a Cityscapes root has leftImg8bit/{split}/CITY/*_leftImg8bit.png")
    if kind == "darkzurich":
        return _listed(Path(path) / "rgb_anon" / split, "_rgb_anon.png",
                       f"a Dark Zurich root has rgb_anon/{split}/night/SEQUENCE/*_rgb_anon.png "
                       "(Dark_Zurich_test_anon_withoutGt.zip for the test split)")
    root, conditions = Path(path.split(",")[0]) / "rgb_anon", _conditions(path)
    layout = f"an ACDC root has rgb_anon/{{fog,night,rain,snow}}/{split}/SEQUENCE/*_rgb_anon.png"
    unknown = [c for c in conditions if c not in ACDC_CONDITIONS]
    if unknown:
        raise DatasetError(f"acdc: unknown condition {unknown[0]!r}; use {', '.join(ACDC_CONDITIONS)} "
                           "(acdc:ROOT for all, acdc:ROOT,night for one)")
    if (root / split).is_dir() and not any((root / c).is_dir() for c in ACDC_CONDITIONS) and not conditions:
        return _listed(root / split, "_rgb_anon.png", layout)  # DAFormer's restructured copy
    return [(f"{condition}/{name}", image) for condition in conditions or ACDC_CONDITIONS
            for name, image in _listed(root / condition / split, "_rgb_anon.png", layout)]


def _ground_truth_categories(root: Path, split: str) -> dict[int, dict]:
    """The categories of the split's createPanopticImgs JSON where there is one (label ids, or train ids with
    --use-train-id), else the Cityscapes label ids."""
    from layerseg_merge.eval.coco_json import read_coco_panoptic
    from layerseg_merge.eval.datasets.cityscapes import _cityscapes_panoptic_json

    try:
        found, _ = _cityscapes_panoptic_json(root, split)
    except DatasetError:  # none (a test split): the label ids, as the server takes them
        return cityscapes_categories()
    return {category["id"]: category for category in read_coco_panoptic(found)["categories"]}


def _coco_image_ids(path: str) -> dict[str, object]:
    """Annotation file name -> image id of a ``coco-panoptic:IMAGES,JSON,PNG_DIR`` ground truth."""
    from layerseg_merge.eval.coco_json import read_coco_panoptic

    data = read_coco_panoptic(Path(path.split(",")[1]))
    return {annotation["file_name"]: annotation["image_id"] for annotation in data["annotations"]}


def split_images(spec: str, split: str, task: str) -> SplitImages:
    """What ``layerseg predict`` runs on for ``spec`` (``KIND:PATH``) and ``split``, for ``task``."""
    kind, path = dataset_kind(spec)
    if kind.name in CITYSCAPES_STYLE:
        images = _cityscapes_style(kind.name, path, split)
        categories = _ground_truth_categories(Path(path.split(",")[0]), split) if task == "panoptic" else None
        return SplitImages(ImageDataset(images), list(CITYSCAPES_CLASSES), categories)
    serves = task if task in kind.tasks else kind.tasks[0]
    opened = kind.opener(path, split, serves)
    if isinstance(opened, PanopticDataset):
        ids = _coco_image_ids(path) if kind.name == "coco-panoptic" else None
        return SplitImages(ImageDataset([(name, entry.image) for name, entry in opened.entries]),
                           opened.class_names, opened.categories, ids)
    if isinstance(opened, SemanticDataset):
        return SplitImages(ImageDataset([(name, image) for name, image, _ in opened.pairs]), opened.class_names, None)
    return SplitImages(opened, getattr(opened, "class_names", None), getattr(opened, "categories", None))

