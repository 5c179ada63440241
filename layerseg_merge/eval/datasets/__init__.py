"""Standard dataset layouts: Cityscapes (+ panoptic), ACDC, Dark Zurich, Mapillary Vistas, COCO panoptic, a folder.

A dataset spec is ``KIND:PATH``; each kind is a module of this package plus one entry of
:data:`~layerseg_merge.eval.datasets.registry.KINDS`, and reads its published on-disk layout and label
encoding (the UDA targets as the 19 Cityscapes train ids). Only regular files are read: a named pipe
where an image, label or JSON belongs would block the reader forever, so it is refused when the dataset
is opened.
"""

from layerseg_merge.eval.datasets.base import (
    DatasetKind,
    ImageDataset,
    PanopticDataset,
    PanopticEntry,
    SemanticDataset,
    label_tensor,
)
from layerseg_merge.eval.datasets.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_IDS, LABEL_ID_TO_TRAIN_ID
from layerseg_merge.eval.datasets.mapillary import MAPILLARY_TABLES
from layerseg_merge.eval.datasets.registry import (
    KINDS,
    card_dataset,
    dataset_kind,
    evaluated_split,
    input_paths,
    open_dataset,
    register_kind,
    split_readers,
    usage,
)
from layerseg_merge.eval.images import IMAGE_SUFFIXES, DatasetError, read_image, read_panoptic_ids, regular_file

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_LABEL_IDS", "IMAGE_SUFFIXES", "KINDS", "LABEL_ID_TO_TRAIN_ID",
           "MAPILLARY_TABLES", "DatasetError", "DatasetKind", "ImageDataset", "PanopticDataset", "PanopticEntry",
           "SemanticDataset", "card_dataset", "dataset_kind", "evaluated_split", "input_paths", "label_tensor",
           "open_dataset", "read_image", "read_panoptic_ids", "register_kind", "regular_file", "split_readers",
           "usage"]
