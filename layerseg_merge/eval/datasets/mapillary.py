"""Mapillary Vistas v1.2: ``mapillary:ROOT[,edaps|hrda]``, mapped to the 19 Cityscapes train ids by one of two
published tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from layerseg_merge.eval.datasets.base import DatasetKind, SemanticDataset, _pairs
from layerseg_merge.eval.datasets.cityscapes import CITYSCAPES_CLASSES
from layerseg_merge.eval.images import DatasetError

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



def _table(path: str) -> str | None:
    table = _mapillary_spec(path)[1]
    return None if table == "edaps" else table


KIND = DatasetKind("mapillary", "ROOT[,edaps|hrda]", "Mapillary Vistas", ("semantic",),
                   lambda path, split, task: mapillary_dataset(Path(_mapillary_spec(path)[0]), split,
                                                               _mapillary_spec(path)[1]),
                   paths=lambda path: (_mapillary_spec(path)[0],) if _mapillary_spec(path)[0] else (),
                   config=_table)
