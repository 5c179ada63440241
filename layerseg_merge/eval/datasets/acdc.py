"""ACDC: ``acdc:ROOT[,fog|night|rain|snow...]``, the 19 Cityscapes train ids."""

from __future__ import annotations

from pathlib import Path

from layerseg_merge.eval.datasets.base import DatasetKind, SemanticDataset
from layerseg_merge.eval.datasets.cityscapes import CITYSCAPES_CLASSES, _train_id_dataset
from layerseg_merge.eval.images import DatasetError

ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


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



def _conditions(path: str) -> tuple[str, ...]:
    return tuple(c for c in path.split(",")[1:] if c)


KIND = DatasetKind("acdc", "ROOT[,fog|night|rain|snow...]", "ACDC", ("semantic",),
                   lambda path, split, task: acdc_dataset(Path(path.split(",")[0]), split, _conditions(path)),
                   paths=lambda path: (path.split(",")[0],) if path.split(",")[0] else (),
                   config=lambda path: ",".join(_conditions(path)) or None)
