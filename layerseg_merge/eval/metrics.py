"""Semantic (mIoU) and panoptic (PQ/SQ/RQ) metrics as small summable states, on any device.

Semantics are those of mmsegmentation's ``IoUMetric`` and cocodataset/panopticapi's
``pq_compute`` (see DESIGN.md §5). Each metric keeps a few tensors that add up
across images and across processes (``all_reduce``), ``update()`` per image and
``compute()`` once, like torchmetrics' ``Metric`` classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

VOID = 0
ID_SPACE = 256**3


class LabelError(ValueError):
    """A label or prediction that cannot be scored (out of range, unknown segment)."""


def _reduce(tensors: Sequence[torch.Tensor]) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for tensor in tensors:
            dist.all_reduce(tensor)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


class SemanticMetric:
    """Dataset-level confusion counts for mIoU, aAcc, mAcc (mmsegmentation ``IoUMetric``).

    The state is an int64 matrix of shape [C, C + 1]: rows are ground-truth classes,
    the last column counts valid pixels predicted as the ignore index (they count in
    the label area but in no prediction area, as in mmsegmentation).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"):
        if num_classes < 1:
            raise LabelError(f"the number of classes must be at least 1; got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, label: torch.Tensor, name: str = "<image>") -> None:
        """Add one image (or a batch) of class-index maps of equal shape."""
        if prediction.shape != label.shape:
            raise LabelError(f"{name}: prediction shape {tuple(prediction.shape)} != label shape "
                             f"{tuple(label.shape)}")
        device = self.confusion.device
        label = label.to(device).flatten()
        prediction = prediction.to(device).flatten()
        c = self.num_classes
        if c <= 256 and 0 <= self.ignore_index < 256:
            self._update_byte_labels(prediction, label, name)
            return
        self._check_range(label, "label", name)
        self._check_range(prediction, "prediction", name)
        label, prediction = label.long(), prediction.long()
        valid = label != self.ignore_index
        label, prediction = label[valid], prediction[valid]
        prediction = torch.where(prediction == self.ignore_index, c, prediction)
        counts = torch.bincount(label * (c + 1) + prediction, minlength=c * (c + 1))
        self.confusion += counts.view(c, c + 1)

    def _check_range(self, values: torch.Tensor, what: str, name: str) -> None:
        bad = ((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)
        if bad.any():
            raise LabelError(
                f"{name}: {what} value {int(values[bad][0])} is outside [0, {self.num_classes - 1}] and is "
                f"not the ignore index {self.ignore_index}; map it to a train id or to {self.ignore_index}"
            )

    def _update_byte_labels(self, prediction: torch.Tensor, label: torch.Tensor, name: str) -> None:
        """Fast path: one 256 x 256 joint histogram; range checks read the histogram."""
        for values, what in ((label, "label"), (prediction, "prediction")):
            if values.dtype != torch.uint8 and values.numel():  # uint8 (decoded PNGs) is in range
                low, high = torch.aminmax(values)
                if int(low) < 0 or int(high) > 255:
                    self._check_range(values, what, name)
        # torch.add(alpha=) is several times faster than `l * 256 + p`; small inputs (uint8 PNGs)
        # go through int32, int64 ones (model argmax) are used as they are, without a copy.
        work = torch.int64 if torch.int64 in (label.dtype, prediction.dtype) else torch.int32
        joint = torch.add(prediction.to(work), label.to(work), alpha=256)
        joint = torch.bincount(joint, minlength=65536)
        joint = joint.view(256, 256)
        c, ignore = self.num_classes, self.ignore_index
        outside = torch.ones(256, dtype=torch.bool, device=joint.device)
        outside[:c] = False
        outside[ignore] = False
        for counts, what in ((joint.sum(1), "label"), (joint.sum(0), "prediction")):
            bad = (counts > 0) & outside
            if bad.any():
                raise LabelError(
                    f"{name}: {what} value {int(bad.nonzero()[0])} is outside [0, {c - 1}] and is not the "
                    f"ignore index {ignore}; map it to a train id or to {ignore}"
                )
        self.confusion[:, :c] += joint[:c, :c]
        self.confusion[:, c] += joint[:c, ignore]

    def reduce(self) -> None:
        _reduce([self.confusion])

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        confusion = self.confusion.double()
        intersect = confusion.diagonal()
        area_label = confusion.sum(1)
        area_pred = confusion[:, : self.num_classes].sum(0)
        union = area_label + area_pred - intersect
        iou = intersect / union  # 0/0 -> NaN: class absent from GT and prediction
        acc = intersect / area_label
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        return {
            "mIoU": _nan_to_none(float(torch.nanmean(iou))),
            "aAcc": _nan_to_none(float(intersect.sum() / area_label.sum())),
            "mAcc": _nan_to_none(float(torch.nanmean(acc))),
            "per_class": {
                name: {"IoU": _nan_to_none(float(i)), "Acc": _nan_to_none(float(a))}
                for name, i, a in zip(names, iou, acc)
            },
        }


@dataclass(frozen=True)
class Segment:
    id: int
    category_id: int
    iscrowd: bool = False


class PanopticMetric:
    """Per-category TP/FP/FN counts and matched-IoU sums (panopticapi ``pq_compute``).

    ``categories`` maps category id -> isthing. Several crowd segments of one
    category all count as crowd (panopticapi keeps only the last one).
    """

    def __init__(self, categories: Mapping[int, bool], device: str | torch.device = "cpu"):
        if not categories:
            raise LabelError("no categories to score; the ground truth must list its categories")
        self.categories = dict(categories)
        size = max(self.categories) + 1
        self.isthing = torch.zeros(size, dtype=torch.bool)
        self.known = torch.zeros(size, dtype=torch.bool)
        for category, thing in self.categories.items():
            self.known[category] = True
            self.isthing[category] = bool(thing)
        self.tp = torch.zeros(size, dtype=torch.int64, device=device)
        self.fp = torch.zeros(size, dtype=torch.int64, device=device)
        self.fn = torch.zeros(size, dtype=torch.int64, device=device)
        self.iou = torch.zeros(size, dtype=torch.float64, device=device)
        self._table_cache: torch.Tensor | None = None

    def _table(self, ids: torch.Tensor, segments: Sequence[Segment], name: str, side: str):
        """Compact index per pixel (0 = VOID), and per index: category, crowd; the keys.

        Segment ids are mapped through a lookup table over the 24-bit id space
        (kept between images), so no sort of the pixels is needed.
        """
        device = ids.device
        ids = ids.flatten().long()
        low, high = torch.aminmax(ids) if ids.numel() else (0, 0)
        if int(low) < 0 or int(high) >= ID_SPACE:
            raise LabelError(f"{name}: {side} ids must be R + 256 G + 256^2 B values")
        keys = [VOID] + [s.id for s in segments]
        if len(set(keys)) != len(keys) or not all(0 < k < ID_SPACE for k in keys[1:]):
            raise LabelError(f"{name}: {side} segment ids must be distinct, non-zero 24-bit values")
        for segment in segments:
            if not (0 <= segment.category_id < len(self.known) and self.known[segment.category_id]):
                raise LabelError(f"{name}: {side} segment {segment.id} has unknown category "
                                 f"{segment.category_id}")
        table = self._lookup(device)
        key_tensor = torch.tensor(keys, device=device)
        table[key_tensor] = torch.arange(len(keys), device=device, dtype=table.dtype)
        index = table[ids]  # int32: the joint index below stays int32 too
        table[key_tensor] = -1
        if index.numel() and int(index.min()) < 0:
            value = int(ids[(index < 0).nonzero()[0]])
            raise LabelError(f"{name}: {side} PNG has segment id {value} with no entry in the JSON")
        category = torch.tensor([-1] + [s.category_id for s in segments], device=device)
        crowd = torch.tensor([False] + [bool(s.iscrowd) for s in segments], device=device)
        return index, category, crowd, keys

    def _lookup(self, device: torch.device) -> torch.Tensor:
        if self._table_cache is None or self._table_cache.device != device:
            self._table_cache = torch.full((ID_SPACE,), -1, dtype=torch.int32, device=device)
        return self._table_cache

    def update(self, pred_ids: torch.Tensor, pred_segments: Sequence[Segment], gt_ids: torch.Tensor,
               gt_segments: Sequence[Segment], name: str = "<image>") -> None:
        """Add one image: id maps (H, W) and their segments."""
        if pred_ids.shape != gt_ids.shape:
            raise LabelError(f"{name}: prediction shape {tuple(pred_ids.shape)} != ground truth shape "
                             f"{tuple(gt_ids.shape)}")
        device = self.tp.device
        g_idx, g_cat, g_crowd, g_keys = self._table(gt_ids.to(device), gt_segments, name, "ground-truth")
        p_idx, p_cat, _, p_keys = self._table(pred_ids.to(device), pred_segments, name, "predicted")
        kg, kp = len(g_cat), len(p_cat)
        joint = torch.add(p_idx, g_idx, alpha=kp)
        inter = torch.bincount(joint, minlength=kg * kp).view(kg, kp).to(torch.float64)
        g_area, p_area = inter.sum(1), inter.sum(0)
        for area, keys, side in ((g_area, g_keys, "ground-truth"), (p_area, p_keys, "predicted")):
            if bool((area[1:] == 0).any()):
                missing = keys[1 + int((area[1:] == 0).nonzero()[0])]
                raise LabelError(f"{name}: {side} segment {missing} is in the JSON but not in the PNG")
        g_void = torch.arange(kg, device=device) == 0  # compact index 0 is VOID
        p_void = torch.arange(kp, device=device) == 0
        void_inter = inter[g_void].sum(0)  # per prediction: pixels on GT VOID
        same = g_cat[:, None] == p_cat[None, :]
        candidate = same & ~g_void[:, None] & ~g_crowd[:, None] & ~p_void[None, :] & (inter > 0)
        union = g_area[:, None] + p_area[None, :] - inter - void_inter[None, :]
        iou = torch.where(candidate, inter / union.clamp(min=1), torch.zeros_like(inter))
        matched = candidate & (iou > 0.5)
        size = len(self.tp)
        pair_cat = g_cat[:, None].expand(kg, kp)[matched]
        self.tp += torch.bincount(pair_cat, minlength=size)
        self.iou.index_add_(0, pair_cat, iou[matched])
        g_matched, p_matched = matched.any(1), matched.any(0)
        missed = ~g_void & ~g_crowd & ~g_matched
        self.fn += torch.bincount(g_cat[missed], minlength=size)
        crowd_inter = (inter * (g_crowd[:, None] & same)).sum(0)
        ignored = (void_inter + crowd_inter) / p_area.clamp(min=1) > 0.5
        false = ~p_void & ~p_matched & ~ignored
        self.fp += torch.bincount(p_cat[false], minlength=size)

    def reduce(self) -> None:
        _reduce([self.tp, self.fp, self.fn, self.iou])

    def compute(self) -> dict:
        tp, fp, fn, iou = (t.cpu().double() for t in (self.tp, self.fp, self.fn, self.iou))
        seen = (tp + fp + fn > 0) & self.known
        denominator = (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-12)
        pq, rq = iou / denominator, tp / denominator
        sq = torch.where(tp > 0, iou / tp.clamp(min=1), torch.zeros_like(iou))
        report: dict = {}
        for split, mask in (("All", seen), ("Things", seen & self.isthing), ("Stuff", seen & ~self.isthing)):
            n = int(mask.sum())
            report[split] = {
                "pq": float(pq[mask].mean()) if n else None,
                "sq": float(sq[mask].mean()) if n else None,
                "rq": float(rq[mask].mean()) if n else None,
                "n": n,
            }
        report["per_class"] = {
            str(c): {"pq": float(pq[c]), "sq": float(sq[c]), "rq": float(rq[c]), "tp": int(tp[c]),
                     "fp": int(fp[c]), "fn": int(fn[c])}
            for c in sorted(self.categories) if seen[c]
        }
        return report
