"""Standard dataset layouts: Cityscapes (+ panoptic), ACDC, Dark Zurich, Mapillary Vistas, COCO panoptic, a folder.

A dataset spec is ``KIND:PATH`` (see :func:`open_dataset`). Each kind reads its published
on-disk layout and label encoding; the UDA targets (ACDC, Dark Zurich, Mapillary) come as the 19
Cityscapes train ids. Only regular files are read: a named pipe where an image, label or JSON belongs
would block the reader forever, so it is refused when the dataset is opened. Samples are dicts with
``name`` (relative path), ``image`` (H, W, 3 uint8 numpy) and either ``label``
(H, W int64 class indices) or ``panoptic`` (H, W int64 segment ids) + ``segments``.
Decoding happens in DataLoader workers.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from layerseg_merge.eval.coco_json import read_coco_panoptic
from layerseg_merge.eval.images import (
    IMAGE_SUFFIXES,
    DatasetError,
    label_array,
    read_image,
    read_panoptic_ids,
    regular_file,
)
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
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")
# Mapillary Vistas v1.2 class ids (0..65) -> Cityscapes train ids, by name (``mapillary:ROOT,NAME``); every other
# id (65 = unlabeled) is ignored (255). The two tables differ on 9 ids: 7, 8, 10, 14, 23 (road in edaps) and 9, 11
# (sidewalk in edaps) are ignored by hrda, 41 is road only in hrda, 49 traffic sign only in edaps.
_MAPILLARY_GROUPS = {
    # CVRN's table (jxhuang0508/CVRN "data loader and processing/init_vistas2cityscapes_format.py"), as EDAPS
    # ships it (susaha/edaps mapillaryscripts/map_ids_19_classes.py): CVRN's and EDAPS's SYNTHIA->Mapillary results.
    "edaps": (((7, 8, 10, 13, 14, 23, 24), 0), ((2, 9, 11, 15), 1), ((17,), 2), ((6,), 3), ((3,), 4), ((45, 47), 5),
              ((48,), 6), ((49, 50), 7), ((30,), 8), ((29,), 9), ((27,), 10), ((19,), 11), ((20, 21, 22), 12),
              ((55,), 13), ((61,), 14), ((54,), 15), ((58,), 16), ((57,), 17), ((52,), 18)),
    # HRDA's (lhoyer/HRDA tools/convert_datasets/mapillary.py, its *_labelTrainIds.png): the Mapillary numbers of
    # DAFormer and HRDA for domain generalization from GTA (HRDA's README, its extension paper).
    "hrda": (((13, 24, 41), 0), ((2, 15), 1), ((17,), 2), ((6,), 3), ((3,), 4), ((45, 47), 5), ((48,), 6),
             ((50,), 7), ((30,), 8), ((29,), 9), ((27,), 10), ((19,), 11), ((20, 21, 22), 12), ((55,), 13),
             ((61,), 14), ((54,), 15), ((58,), 16), ((57,), 17), ((52,), 18)),
}
MAPILLARY_TABLES = {name: np.full(256, 255, dtype=np.uint8) for name in _MAPILLARY_GROUPS}
for _name, _groups in _MAPILLARY_GROUPS.items():
    for _ids, _train_id in _groups:
        MAPILLARY_TABLES[_name][list(_ids)] = _train_id
MAPILLARY_SPLITS = {"val": "validation", "train": "training", "test": "testing"}


def label_tensor(label: np.ndarray) -> torch.Tensor:
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


class SemanticDataset(torch.utils.data.Dataset):
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
    images = [(str(p.relative_to(base)), p) for p in _image_files(base)]
    if not images:
        raise _no_images(base, "images:ROOT reads every image under ROOT (or ROOT/images)")
    return ImageDataset(images)


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


def _class_names(path: Path) -> list[str]:
    """The lines of a UTF-8 ``classes.txt`` (a byte-order mark is dropped)."""
    try:
        return regular_file(path, "classes.txt").read_bytes().decode("utf-8-sig").split("\n")
    except OSError as error:
        raise DatasetError(f"{path}: cannot read it ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8, one "
                           "class name per line") from error


def _coco_image(images: Path, annotation: dict, name: str | None) -> Path:
    """The image of ``annotation``: IMAGES/NAME (``name`` from the JSON's `images`, else the PNG's stem + .jpg),
    or else the first image of that stem with another suffix."""
    name = name or Path(annotation["file_name"]).stem + ".jpg"
    if (images / name).exists():
        return images / name
    alternatives = sorted(p for p in images.glob(glob.escape(Path(name).stem) + ".*")
                          if p.suffix.lower() in IMAGE_SUFFIXES)
    if not alternatives:
        raise DatasetError(f"{images / name}: image of annotation {annotation['file_name']} not found")
    return alternatives[0]


def load_coco_panoptic(images: Path, annotations: Path, png_dir: Path,
                       locate: Callable[[dict, str | None], Path] | None = None) -> PanopticDataset:
    """COCO panoptic ground truth; ``locate(annotation, name)`` finds the image of an annotation, given the file name
    that the JSON's `images` give it (None if they give none); default :func:`_coco_image`."""
    data = read_coco_panoptic(annotations)
    categories = {c["id"]: c for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data.get("images", [])}
    entries = []
    for annotation in data["annotations"]:
        name = files.get(annotation["image_id"])
        image = regular_file(locate(annotation, name) if locate else _coco_image(images, annotation, name), "an image")
        png = png_dir / annotation["file_name"]
        if not png.exists():
            raise DatasetError(f"{png}: panoptic PNG listed in {annotations.name} not found")
        regular_file(png, "a panoptic PNG")
        segments = []
        for s in annotation["segments_info"]:
            if s["category_id"] not in categories:
                raise DatasetError(f"{png}: segment {s['id']} has unknown category id {s['category_id']}")
            segments.append(Segment(s["id"], s["category_id"], bool(s.get("iscrowd", 0))))
        entries.append((annotation["file_name"], PanopticEntry(image, png, tuple(segments))))
    if not entries:
        raise DatasetError(f"{annotations}: no annotations (an empty `annotations` list); give the ground truth of "
                           "at least one image")
    return PanopticDataset(entries, categories)


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


def acdc_dataset(root: Path, split: str, conditions: tuple[str, ...] = ()) -> SemanticDataset:
    """ACDC: ``rgb_anon/COND/SPLIT/SEQ/*_rgb_anon.png`` + ``gt/COND/SPLIT/SEQ/*_gt_labelTrainIds.png``.

    ``conditions``: any of fog, night, rain, snow (default all four). DAFormer's restructured copy
    (``rgb_anon/SPLIT/`` + ``gt/SPLIT/``, every condition together) is read too.
    """
    rgb, gt = root / "rgb_anon", root / "gt"
    layout = (f"an ACDC root has rgb_anon/{{fog,night,rain,snow}}/{split}/SEQUENCE/*_rgb_anon.png and "
              f"gt/CONDITION/{split}/SEQUENCE/*_gt_labelTrainIds.png (ground truth for train and val only)")
    unknown = [c for c in conditions if c not in ACDC_CONDITIONS]
    if unknown:
        raise DatasetError(f"acdc: unknown condition {unknown[0]!r}; use {', '.join(ACDC_CONDITIONS)} "
                           "(acdc:ROOT for all, acdc:ROOT,night for one)")
    if not rgb.is_dir():
        raise DatasetError(f"{rgb}: missing; {layout}")
    if (rgb / split).is_dir() and not any((rgb / c).is_dir() for c in ACDC_CONDITIONS):
        if conditions:
            raise DatasetError(f"{rgb / split}: a restructured ACDC copy (every condition in one folder) cannot be "
                               "split by condition; use acdc:ROOT, or the original rgb_anon/CONDITION/ layout")
        return _train_id_dataset(rgb / split, gt / split, "_rgb_anon.png", "_gt_", layout)
    parts = {condition: _train_id_dataset(rgb / condition / split, gt / condition / split, "_rgb_anon.png", "_gt_",
                                          layout) for condition in conditions or ACDC_CONDITIONS}
    if len({part.label_map is None for part in parts.values()}) > 1:
        raise DatasetError(f"{gt}: some conditions have *_gt_labelTrainIds.png and others only *_gt_labelIds.png; "
                           "give every condition the same label files")
    pairs = [(f"{condition}/{name}", image, label) for condition, part in parts.items()
             for name, image, label in part.pairs]
    return SemanticDataset(pairs, list(CITYSCAPES_CLASSES), next(iter(parts.values())).label_map)


def dark_zurich_dataset(root: Path, split: str) -> SemanticDataset:
    """Dark Zurich: ``rgb_anon/SPLIT/night/SEQ/*_rgb_anon.png`` + ``gt/SPLIT/night/SEQ/*_gt_labelTrainIds.png``."""
    layout = (f"a Dark Zurich root has rgb_anon/{split}/night/SEQUENCE/*_rgb_anon.png and gt/{split}/night/SEQUENCE/"
              "*_gt_labelTrainIds.png (Dark_Zurich_val_anon.zip; the test split is scored on its server)")
    return _train_id_dataset(root / "rgb_anon" / split, root / "gt" / split, "_rgb_anon.png", "_gt_", layout)


def _mapillary_spec(path: str) -> tuple[str, str]:
    """(ROOT, id table) of the PATH of ``mapillary:ROOT[,TABLE]`` (edaps when none is given)."""
    root, comma, table = path.rpartition(",")
    return (root, table) if comma else (path, "edaps")


def mapillary_dataset(root: Path, split: str, table: str = "edaps") -> SemanticDataset:
    """Mapillary Vistas v1.2: ``validation/images/*.jpg`` + ``validation/labels/*.png`` (palette PNGs of class
    ids 0..65; a v2.0 download keeps them in ``validation/v1.2/labels``), mapped to the Cityscapes train ids by
    ``table`` (:data:`MAPILLARY_TABLES`): edaps, CVRN's as EDAPS ships it (EDAPS's and CVRN's numbers), or hrda,
    HRDA's (DAFormer's and HRDA's domain-generalization numbers)."""
    if table not in MAPILLARY_TABLES:
        raise DatasetError(f"mapillary: unknown id table {table!r}; use edaps (the default: CVRN's table as EDAPS "
                           "ships it, for EDAPS's numbers) or hrda (for DAFormer's and HRDA's domain-generalization "
                           "numbers), as mapillary:ROOT,hrda")
    folder = root / MAPILLARY_SPLITS.get(split, split)
    images = folder / "images"
    labels = next((p for p in (folder / "labels", folder / "v1.2" / "labels") if p.is_dir()), folder / "labels")
    for path in (images, labels):
        if not path.is_dir():
            raise DatasetError(f"{path}: missing; a Mapillary Vistas root has {folder.name}/images/*.jpg and "
                               f"{folder.name}/labels/*.png (v1.2 labels; v2.0 downloads: {folder.name}/v1.2/labels)")
    pairs = _pairs(images, lambda p: (labels / p.relative_to(images)).with_suffix(".png"),
                   f"a Mapillary Vistas root has {folder.name}/images/*.jpg and {folder.name}/labels/*.png")
    return SemanticDataset(pairs, list(CITYSCAPES_CLASSES), MAPILLARY_TABLES[table],
                           id_range=(65, "a Mapillary Vistas v1.2 class id"))


KINDS = ("cityscapes:ROOT | cityscapes-panoptic:ROOT | acdc:ROOT[,CONDITION...] | darkzurich:ROOT | "
         "mapillary:ROOT[,edaps|hrda] | coco-panoptic:IMAGES,JSON,PNG_DIR | folder:ROOT | images:ROOT")
PANOPTIC_KINDS = ("coco-panoptic", "cityscapes-panoptic")


def input_paths(spec: str) -> tuple[str, ...]:
    """The files and folders a dataset spec ``KIND:PATH`` reads (ACDC's conditions, Mapillary's table are not paths)."""
    kind, _, path = spec.partition(":")
    if kind == "coco-panoptic":
        return tuple(p for p in path.split(",") if p)
    if kind == "acdc":
        path = path.split(",")[0]
    if kind == "mapillary":
        path = _mapillary_spec(path)[0]
    return (path,) if path else ()


def open_dataset(spec: str, split: str = "val", task: str = "semantic"):
    """A dataset from its spec, ``KIND:PATH`` (:data:`KINDS`).

    ``task="images"`` gives the images of any of them without labels (``images:ROOT`` needs none).
    """
    kind, _, path = spec.partition(":")
    if task == "images":
        if kind == "images":
            return image_folder(Path(path))
        labelled = open_dataset(spec, split, "panoptic" if kind in PANOPTIC_KINDS else "semantic")
        items = labelled.pairs if isinstance(labelled, SemanticDataset) else [
            (name, entry.image) for name, entry in labelled.entries]
        return ImageDataset([(item[0], item[1]) for item in items])
    if kind == "images":
        raise DatasetError("images:ROOT has no labels; it serves recalibration and --unsupervised only")
    if kind == "cityscapes-panoptic" and task != "panoptic":
        raise DatasetError("cityscapes-panoptic ground truth is panoptic; evaluate it with --task panoptic")
    if kind in ("folder", "acdc", "darkzurich", "mapillary") and task != "semantic":
        raise DatasetError(f"{kind} datasets are semantic; use cityscapes-panoptic or coco-panoptic for panoptic data")
    if kind == "folder":
        return folder_dataset(Path(path))
    if kind == "cityscapes":
        return cityscapes_dataset(Path(path), split, task)
    if kind == "cityscapes-panoptic":
        return cityscapes_panoptic_dataset(Path(path), split)
    if kind == "acdc":
        root, *conditions = path.split(",")
        return acdc_dataset(Path(root), split, tuple(c for c in conditions if c))
    if kind == "darkzurich":
        return dark_zurich_dataset(Path(path), split)
    if kind == "mapillary":
        root, table = _mapillary_spec(path)
        return mapillary_dataset(Path(root), split, table)
    if kind == "coco-panoptic":
        parts = path.split(",")
        if len(parts) != 3:
            raise DatasetError("coco-panoptic needs IMAGES,JSON,PNG_DIR (comma-separated)")
        return load_coco_panoptic(*(Path(p) for p in parts))
    raise DatasetError(f"unknown dataset kind {kind!r}; use {KINDS}")


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
