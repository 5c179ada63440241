"""What evaluating a model means per task: the metric state, the batch key of the ground truth, how a batch of
predictions is scored and how the report is finished. ``evaluate`` and the sweep loop over batches once, for any
task; a new task is its class here plus one entry of :data:`TASKS`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from layerseg_merge.eval.class_alignment import align_classes
from layerseg_merge.eval.class_subsets import restrict_report
from layerseg_merge.eval.inference import Segmenter, label_to_category
from layerseg_merge.eval.metrics import PanopticMetric, SemanticMetric
from layerseg_merge.models.info import ModelInfo


def _looked_up(table: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``table[values]``; values beyond the table (bad labels) stay as they are, for the metric to name."""
    if values.dtype == torch.uint8 and len(table) >= 256:
        return table[values.long()]
    inside = (values >= 0) & (values < len(table))
    return torch.where(inside, table[values.clamp(0, len(table) - 1).long()].to(values.dtype), values)


class SemanticScoring:
    """Class-index maps against labels (mmsegmentation's IoUMetric); the model's classes matched to the dataset's
    by name (:mod:`layerseg_merge.eval.class_alignment`)."""

    target = "labels"

    @staticmethod
    def check(info: ModelInfo, dataset, model: str) -> None:
        align_classes(info.labels, getattr(dataset, "class_names", None), f"the model {model}", "the dataset")

    def __init__(self, segmenter: Segmenter, dataset, ignore_index: int = 255):
        self.segmenter = segmenter
        self.alignment = align_classes([segmenter.id2label[i] for i in range(len(segmenter.id2label))],
                                       getattr(dataset, "class_names", None), f"the model {segmenter.model_dir}",
                                       "the dataset")
        self.tables = self.alignment.tables(ignore_index, segmenter.device)
        self.metric = SemanticMetric(len(self.alignment.names), ignore_index)

    def add(self, batch: dict, pictures, sizes: list, count: int) -> list[tuple]:
        """Score a batch; returns each image's (prediction, label) as scored (class indices of the report's names)."""
        predictions = self.segmenter.semantic(pictures, sizes)[:count]
        scored = []
        for name, prediction, label in zip(batch["names"], predictions, batch[self.target]):
            if self.tables is not None:  # the model's and the dataset's classes, matched by name
                label, prediction = _looked_up(self.tables[0], label), self.tables[1][prediction]
            if self.metric.num_classes < 255:  # smaller maps take the metric's fastest path
                prediction = prediction.to(torch.uint8)
            self.metric.update(prediction, label, name=name, defer=True)
            scored.append((prediction, label))
        return scored

    def report(self, classes: int) -> dict:
        report = self.metric.compute(self.alignment.names)
        if not self.alignment.identity:
            report["class_alignment"] = self.alignment.note
        return restrict_report(report, classes)


class PanopticScoring:
    """COCO panoptic segments against the ground truth's (panopticapi's ``pq_compute``)."""

    target = "panoptic"

    @staticmethod
    def check(info: ModelInfo, dataset, model: str) -> None:
        if info.gives_panoptic:  # (a semantic model is refused as such by the Segmenter)
            label_to_category(dict(enumerate(info.labels)), dataset.categories)

    def __init__(self, segmenter: Segmenter, dataset, ignore_index: int = 255):
        segmenter.require_panoptic()
        self.segmenter, self.categories = segmenter, dataset.categories
        self.metric = PanopticMetric({c: bool(v.get("isthing", 0)) for c, v in self.categories.items()})
        self.mapping = label_to_category(segmenter.id2label, self.categories)
        self.stuff = {label for label, category in self.mapping.items()
                      if not self.categories[category].get("isthing", 0)}

    def add(self, batch: dict, pictures, sizes: list, count: int) -> list[tuple]:
        """Score a batch; returns each image's (ids, segments, ground-truth ids, ground-truth segments)."""
        results = self.segmenter.panoptic(pictures, sizes, self.mapping, self.stuff)[:count]
        scored = []
        for name, (ids, segments), gt_ids, gt_segments in zip(batch["names"], results, batch[self.target],
                                                             batch["segments"]):
            self.metric.update(ids, segments, gt_ids, gt_segments, name=name)
            scored.append((ids, segments, gt_ids, gt_segments))
        return scored

    def report(self, classes: int) -> dict:
        return restrict_report(self.metric.compute(), classes, self.categories)


TASKS: Mapping[str, type] = {"semantic": SemanticScoring, "panoptic": PanopticScoring}
