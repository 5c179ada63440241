"""COCO panoptic ground truth: ``coco-panoptic:IMAGES,JSON,PNG_DIR`` (read whole, as given)."""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

from layerseg_merge.eval.coco_json import read_coco_panoptic
from layerseg_merge.eval.datasets.base import DatasetKind, PanopticDataset, PanopticEntry
from layerseg_merge.eval.images import IMAGE_SUFFIXES, DatasetError, regular_file
from layerseg_merge.eval.metrics import Segment


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



def _open(path: str, split: str, task: str) -> PanopticDataset:
    parts = path.split(",")
    if len(parts) != 3:
        raise DatasetError("coco-panoptic needs IMAGES,JSON,PNG_DIR (comma-separated)")
    return load_coco_panoptic(*(Path(p) for p in parts))


def _name(path: str) -> str:
    first, *rest = path.split(",")
    return f"COCO panoptic ({Path(rest[0] if rest else first.rstrip('/')).name})"


KIND = DatasetKind("coco-panoptic", "IMAGES,JSON,PNG_DIR", _name, ("panoptic",), _open, reads_split=False,
                   paths=lambda path: tuple(p for p in path.split(",") if p))
