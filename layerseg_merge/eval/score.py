"""Score predictions already on disk (the same inputs as the reference tools)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from layerseg_merge.eval.datasets import (
    IMAGE_SUFFIXES,
    CarryErrors,
    DatasetError,
    checked,
    label_tensor,
    read_image,
    read_panoptic_ids,
)
from layerseg_merge.eval.metrics import PanopticMetric, Segment, SemanticMetric


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, pairs, load):
        self.pairs, self.load = pairs, load

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.load(*self.pairs[index])


def _loader(pairs, load, workers: int):
    loader = torch.utils.data.DataLoader(CarryErrors(_Pairs(pairs, load)), batch_size=None, num_workers=workers)
    return (checked(item) for item in loader)


def score_semantic(gt_dir: Path, pred_dir: Path, num_classes: int, ignore_index: int = 255,
                   class_names: list[str] | None = None, workers: int = 2, progress: bool = True) -> dict:
    """Class-index PNGs in ``pred_dir`` against ``gt_dir``, paired by relative path."""
    if num_classes < 1:
        raise DatasetError(f"--num-classes must be at least 1; got {num_classes}")
    gts = sorted(p for p in gt_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not gts:
        raise DatasetError(f"{gt_dir}: no label images")
    pairs = []
    for gt in gts:
        pred = pred_dir / gt.relative_to(gt_dir)
        if not pred.exists():
            raise DatasetError(f"{pred}: prediction missing for ground truth {gt}")
        pairs.append((str(gt.relative_to(gt_dir)), gt, pred))

    def load(name, gt, pred):
        return name, label_tensor(read_image(gt)), label_tensor(read_image(pred))

    metric = SemanticMetric(num_classes, ignore_index)
    with tqdm(_loader(pairs, load, workers), total=len(pairs), desc="score", unit="img",
              disable=not progress) as bar:
        for name, label, prediction in bar:
            metric.update(prediction, label, name=name)
    return metric.compute(class_names)


def _annotations(json_path: Path, with_categories: bool) -> dict:
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{json_path}: cannot read COCO panoptic JSON ({error})") from error
    needed = ("annotations", "categories") if with_categories else ("annotations",)
    for key in needed:
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: not a COCO panoptic JSON (no `{key}` list)")
    if with_categories and not data["categories"]:
        raise DatasetError(f"{json_path}: `categories` is empty; the ground truth must list its categories")
    try:
        for annotation in data["annotations"]:
            annotation["image_id"], annotation["file_name"], annotation["segments_info"]  # noqa: B018
        categories = [(c["id"], c.get("isthing", 0)) for c in data.get("categories", [])]
    except (KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"{json_path}: not a COCO panoptic JSON (an entry lacks {error})") from error
    if any(not isinstance(cid, int) or cid < 0 for cid, _ in categories):
        raise DatasetError(f"{json_path}: category ids must be non-negative integers")
    return data


def _ids(png: Path, segments_info: list[dict]) -> tuple[torch.Tensor, list[Segment]]:
    ids = read_panoptic_ids(png)
    segments = [Segment(s["id"], s["category_id"], bool(s.get("iscrowd", 0))) for s in segments_info]
    areas = dict(zip(*(t.tolist() for t in torch.unique(ids, return_counts=True))))
    for s in segments_info:
        if "area" in s and s["id"] in areas and s["area"] != areas[s["id"]]:
            warnings.warn(f"{png}: segment {s['id']} has area {s['area']} in the JSON but "
                          f"{areas[s['id']]} pixels in the PNG; using the PNG", stacklevel=2)
    return ids, segments


def score_panoptic(gt_json: Path, gt_folder: Path, pred_json: Path, pred_folder: Path,
                   workers: int = 2, progress: bool = True) -> dict:
    """panopticapi ``pq_compute`` inputs: COCO panoptic JSON + PNG folder for GT and predictions."""
    gt, pred = _annotations(gt_json, True), _annotations(pred_json, False)
    categories = {c["id"]: bool(c.get("isthing", 0)) for c in gt["categories"]}
    predictions = {a["image_id"]: a for a in pred["annotations"]}
    pairs = []
    for annotation in gt["annotations"]:
        match = predictions.get(annotation["image_id"])
        if match is None:
            raise DatasetError(f"{pred_json}: no prediction for image_id {annotation['image_id']}")
        pairs.append((annotation, match))

    def load(gt_annotation, pred_annotation):
        gt_ids, gt_segments = _ids(gt_folder / gt_annotation["file_name"], gt_annotation["segments_info"])
        pred_ids, pred_segments = _ids(pred_folder / pred_annotation["file_name"],
                                       pred_annotation["segments_info"])
        return gt_annotation["file_name"], pred_ids, pred_segments, gt_ids, gt_segments

    metric = PanopticMetric(categories)
    for name, pred_ids, pred_segments, gt_ids, gt_segments in tqdm(
            _loader(pairs, load, workers), total=len(pairs), desc="score", unit="img", disable=not progress):
        metric.update(pred_ids, pred_segments, gt_ids, gt_segments, name=name)
    return metric.compute()
