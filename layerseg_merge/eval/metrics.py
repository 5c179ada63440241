"""Semantic (mIoU) and panoptic (PQ/SQ/RQ) metrics as small summable states, on numpy or torch.

Semantics are those of mmsegmentation's ``IoUMetric`` and cocodataset/panopticapi's
``pq_compute`` (see DESIGN.md §5). Like torchmetrics' ``Metric`` classes, each metric
keeps a few arrays that add up across images and processes: ``image_stats()``
computes one image's contribution (pure), ``add()`` sums it, ``update()`` does both,
``reduce()`` all-reduces under torch.distributed and ``compute()`` runs once.

The kernels are written once for numpy arrays and torch tensors (on any device):
``layerseg eval`` keeps everything on the GPU, while ``layerseg score`` runs on
numpy in worker processes and never imports torch. The few calls where the two
libraries differ go through :class:`_Arrays`.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

VOID = 0
ID_SPACE = 256**3


class LabelError(ValueError):
    """A label or prediction that cannot be scored (out of range, unknown segment)."""


class _Arrays:
    """numpy or torch, chosen by an input array; the calls that differ between them."""

    def __init__(self, like):
        self.is_torch = not isinstance(like, np.ndarray)
        self.xp = sys.modules["torch"] if self.is_torch else np
        self.device = like.device if self.is_torch else None

    def dtype(self, name: str):
        return getattr(self.xp, name)

    def new(self, values, dtype: str):
        if self.is_torch:
            return self.xp.tensor(values, dtype=self.dtype(dtype), device=self.device)
        return np.asarray(values, dtype=dtype)

    def zeros(self, shape, dtype: str):
        if self.is_torch:
            return self.xp.zeros(shape, dtype=self.dtype(dtype), device=self.device)
        return np.zeros(shape, dtype=dtype)

    def arange(self, start: int, stop: int, dtype: str):
        if self.is_torch:
            return self.xp.arange(start, stop, dtype=self.dtype(dtype), device=self.device)
        return np.arange(start, stop, dtype=dtype)

    def take(self, table, index):
        """``table[index]`` for a 1-D table (np.take avoids fancy indexing's overhead)."""
        return table[index] if self.is_torch else np.take(table, index)

    def cast(self, array, dtype: str):
        return array.to(self.dtype(dtype)) if self.is_torch else array.astype(dtype, copy=False)

    def adopt(self, array):
        """``array`` in this namespace (and on this device)."""
        if self.is_torch:
            return array.to(self.device) if not isinstance(array, np.ndarray) else \
                self.xp.from_numpy(np.ascontiguousarray(array)).to(self.device)
        return array if isinstance(array, np.ndarray) else array.cpu().numpy()

    def is_byte(self, array) -> bool:
        return array.dtype == self.dtype("uint8")

    def weighted_sum(self, high, low, factor: int, dtype: str):
        """``high * factor + low`` in ``dtype`` (torch's fused add is several times faster)."""
        if self.is_torch:
            return self.xp.add(self.cast(low, dtype), self.cast(high, dtype), alpha=factor)
        return np.multiply(high, factor, dtype=dtype) + low

    def concat(self, first, second):
        return self.xp.cat((first, second)) if self.is_torch else np.concatenate((first, second))

    def runs(self, first, second, count: int, most: int):
        """Where runs of equal (``first``, ``second``) keys start among ``count`` pixels, and their lengths (int64);
        None where there are more than ``most`` runs. The keys (:class:`_Pixels`) stop before the last pixel,
        which always starts a run.

        One comparison per side and pixel and no per-pixel integer temporary: a pair of panoptic maps of flat
        regions (a few runs per row) costs about what reading it does.
        """
        if self.is_torch:
            change = self.xp.ones(count, dtype=self.xp.bool, device=self.device)
            if count > 2:
                self.xp.ne(first[1:], first[:-1], out=change[1:-1])
                change[1:-1] |= second[1:] != second[:-1]
            if int(change.sum()) > most:
                return None
            starts = change.nonzero()[:, 0]
            return starts, self.xp.diff(starts, append=self.new([count], "int64"))
        change = np.ones(count, dtype=bool) if count <= 2 else np.empty(count, dtype=bool)
        if count > 2:
            change[0] = change[-1] = True
            np.not_equal(first[1:], first[:-1], out=change[1:-1])
            change[1:-1] |= second[1:] != second[:-1]
        if np.count_nonzero(change) > most:
            return None
        starts = np.flatnonzero(change)
        return starts, np.diff(starts, append=count)


def _is_rgb(array) -> bool:
    """A panoptic PNG's pixels as decoded: (H, W, 3) uint8, id R + 256 G + 256^2 B."""
    return array.ndim == 3 and array.shape[-1] == 3 and str(array.dtype).endswith("uint8")


class _Pixels:
    """One side of a panoptic pair in pixel order: keys that change between neighbours wherever the segment id
    does, and the ids of given pixels.

    An id map's keys are its ids. The RGB bytes of a panoptic PNG (numpy) are read 4 at a time from byte 3k, pixel
    k's colour and the next pixel's red, so that no id map is made: a key may change where the id does not (a run
    cut in two, which changes no sum), never the reverse. The last pixel has no key (its 4-byte read would pass the
    end of the pixels): it always starts a run.
    """

    def __init__(self, ops: _Arrays, array):
        self.ops, self.ids = ops, None
        if _is_rgb(array) and ops.is_torch:  # on a device: the ids, computed there
            array = ops.cast(array, "int64")
            array = array[..., 0] + 256 * array[..., 1] + 65536 * array[..., 2]
        if _is_rgb(array):
            flat = np.ascontiguousarray(array).reshape(-1)
            self.count = flat.shape[0] // 3
            self.keys = np.ndarray((max(self.count - 1, 0),), dtype="<u4", buffer=flat, strides=(3,))
            red, green, blue = (int(v) for v in flat[-3:]) if self.count else (0, 0, 0)
            self.last = np.array([red | green << 8 | blue << 16] if self.count else [], dtype=np.uint32)
        else:
            self.ids = array.reshape(-1)
            self.count, self.keys, self.last = self.ids.shape[0], self.ids[:-1], self.ids[-1:]

    def at(self, starts):
        """The ids at ``starts``, run starts in order, the last pixel last."""
        keys = self.keys[starts[:-1]]
        return self.ops.concat(keys if self.ids is not None else keys & 0xFFFFFF, self.last)

    def every(self):
        """Every pixel's id."""
        if self.ids is not None:
            return self.ids
        ids = np.empty(self.count, dtype=np.uint32)
        np.bitwise_and(self.keys, 0xFFFFFF, out=ids[:-1])
        ids[-1:] = self.last
        return ids


def _first(mask) -> int:
    """Index of the first True of a 1-D mask (numpy or torch)."""
    return int(mask.nonzero()[0][0])


def _to_numpy(array) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else array.detach().cpu().numpy()


def _on_cpu(array) -> bool:
    """Whether ``array`` is a torch tensor in CPU memory: the kernels run on numpy views of those. torch's CPU
    ``bincount`` and ``nonzero`` took 1.3-4x numpy's time with one thread, 10-30x with two beside other work
    (2 cores, load 1.7-2; benchmarks/score_speed.py)."""
    return not isinstance(array, np.ndarray) and array.device.type == "cpu"


def _as_torch(array):
    """A numpy result as a CPU tensor (no copy)."""
    return sys.modules["torch"].from_numpy(np.ascontiguousarray(array))


def _distributed() -> bool:
    if "torch" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _reduce(arrays: Sequence, device) -> list:
    """All-reduce (sum) the state under torch.distributed; numpy states move to ``device`` first."""
    if not _distributed():
        return list(arrays)
    import torch
    import torch.distributed as dist

    tensors = [torch.as_tensor(a).to(device) for a in arrays]  # a rank with no image holds numpy zeros
    for tensor in tensors:
        dist.all_reduce(tensor)
    return tensors


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> NaN, reported as null
        return float(np.nanmean(values))


class SummedMetric:
    """A metric whose state is a few arrays summed over images and over ranks (torchmetrics' ``add_state(...,
    dist_reduce_fx="sum")``): :meth:`add` per image, :meth:`reduce` across ``torch.distributed`` ranks, then
    the subclass's ``compute``. The state lives where the first image's arrays live (numpy, or torch on a device).
    """

    def __init__(self) -> None:
        self._state: list | None = None

    def _empty(self) -> list:
        """The state before any image (numpy zeros)."""
        raise NotImplementedError

    @property
    def state(self) -> list:
        return self._empty() if self._state is None else self._state

    def _add(self, values: Sequence) -> None:
        if self._state is None:
            self._state = [v.clone() if hasattr(v, "clone") else v.copy() for v in values]
        else:
            ops = _Arrays(self._state[0])
            for total, value in zip(self._state, values):
                total += ops.adopt(value)

    def reduce(self, device="cpu") -> None:
        """Sum the state over torch.distributed ranks (``device``: where the collective runs)."""
        self._state = _reduce(self.state, device)

    def reset(self) -> None:
        self._state = None


class SemanticMetric(SummedMetric):
    """Dataset-level confusion counts for mIoU, aAcc, mAcc (mmsegmentation ``IoUMetric``).

    The state is an int64 matrix of shape [C, C + 1]: rows are ground-truth classes,
    the last column counts valid pixels predicted as the ignore index (they count in
    the label area but in no prediction area, as in mmsegmentation). It lives where
    the first image's arrays live (numpy, or torch on their device).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise LabelError(f"the number of classes must be at least 1; got {num_classes}")
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._pending: list[tuple[str, object, object]] = []  # deferred range checks: (name, bad label, bad pred)

    def _empty(self) -> list:
        return [np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)]

    @property
    def confusion(self):
        return self.state[0]

    def update(self, prediction, label, name: str = "<image>", defer: bool = False) -> None:
        """Add one image (or a batch) of class-index maps of equal shape.

        ``defer``: the range checks of this image are read back at the next update (or at
        ``compute``), so that a GPU is never waited for in between; an error still names the image.
        """
        self._check_pending(keep=1 if defer else 0)
        self.add(self.image_stats(prediction, label, name, defer=defer))
        if not defer:
            self._check_pending(keep=0)

    def _check_pending(self, keep: int) -> None:
        while len(self._pending) > keep:
            name, bad_label, bad_prediction = self._pending.pop(0)
            self._raise_if_bad(bad_label, "label", name)
            self._raise_if_bad(bad_prediction, "prediction", name)

    def _raise_if_bad(self, bad, what: str, name: str) -> None:
        if bad is not None and bool(bad.any()):
            c, ignore = self.num_classes, self.ignore_index
            raise LabelError(f"{name}: {what} value {_first(bad)} is outside [0, {c - 1}] and is not the ignore index "
                             f"{ignore}; map it to a train id or to {ignore}")

    def add(self, confusion) -> None:
        self._add([confusion])

    def image_stats(self, prediction, label, name: str = "<image>", defer: bool = False):
        """One image's confusion counts [C, C + 1], in the namespace (and on the device) of ``prediction``."""
        if tuple(prediction.shape) != tuple(label.shape):
            raise LabelError(f"{name}: prediction shape {tuple(prediction.shape)} != label shape "
                             f"{tuple(label.shape)}")
        if _on_cpu(prediction):
            return _as_torch(self.image_stats(_to_numpy(prediction), _to_numpy(label), name, defer))
        ops = _Arrays(prediction)
        label, prediction = ops.adopt(label).reshape(-1), prediction.reshape(-1)
        if self.num_classes <= 256 and 0 <= self.ignore_index < 256:
            return self._byte_labels(ops, prediction, label, name, defer)
        c = self.num_classes
        self._check_range(label, "label", name)
        self._check_range(prediction, "prediction", name)
        label, prediction = ops.cast(label, "int64"), ops.cast(prediction, "int64")
        valid = label != self.ignore_index
        label, prediction = label[valid], prediction[valid]
        prediction = ops.xp.where(prediction == self.ignore_index, c, prediction)
        counts = ops.xp.bincount(label * (c + 1) + prediction, minlength=c * (c + 1))
        return counts.reshape(c, c + 1)

    def _check_range(self, values, what: str, name: str) -> None:
        bad = ((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)
        if bad.any():
            raise LabelError(
                f"{name}: {what} value {int(values[bad][0])} is outside [0, {self.num_classes - 1}] and is "
                f"not the ignore index {self.ignore_index}; map it to a train id or to {self.ignore_index}"
            )

    def _byte_labels(self, ops: _Arrays, prediction, label, name: str, defer: bool = False):
        """Fast path: one 256 x 256 joint histogram; range checks read the histogram."""
        for values, what in ((label, "label"), (prediction, "prediction")):
            if not ops.is_byte(values) and values.shape[0]:  # uint8 (decoded PNGs) is in range
                if int(values.min()) < 0 or int(values.max()) > 255:
                    self._check_range(values, what, name)
        # Small inputs (uint8 PNGs) go through int32; int64 ones (model argmax) are used as they are.
        work = "int64" if ops.dtype("int64") in (label.dtype, prediction.dtype) else "int32"
        joint = ops.xp.bincount(ops.weighted_sum(label, prediction, 256, work), minlength=65536).reshape(256, 256)
        c, ignore = self.num_classes, self.ignore_index
        outside = ops.new([True] * 256, "bool")
        outside[:c] = False
        outside[ignore] = False
        bad_label, bad_prediction = (joint.sum(1) > 0) & outside, (joint.sum(0) > 0) & outside
        if defer:
            self._pending.append((name, bad_label, bad_prediction))
        else:
            self._raise_if_bad(bad_label, "label", name)
            self._raise_if_bad(bad_prediction, "prediction", name)
        confusion = ops.zeros((c, c + 1), "int64")
        confusion[:, :c] = joint[:c, :c]
        confusion[:, c] = joint[:c, ignore]
        return confusion

    def reduce(self, device="cpu") -> None:
        self._check_pending(keep=0)
        super().reduce(device)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        self._check_pending(keep=0)
        confusion = _to_numpy(self.confusion).astype(np.float64)
        intersect = confusion.diagonal()
        area_label = confusion.sum(1)
        area_pred = confusion[:, : self.num_classes].sum(0)
        union = area_label + area_pred - intersect
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = intersect / union  # 0/0 -> NaN: class absent from GT and prediction
            acc = intersect / area_label
            total = intersect.sum() / area_label.sum()
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        return {
            "mIoU": _nan_to_none(_nanmean(iou)),
            "aAcc": _nan_to_none(float(total)),
            "mAcc": _nan_to_none(_nanmean(acc)),
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
    area: int | None = None  # the JSON's area, if any; checked against the PNG


@dataclass(frozen=True)
class PanopticStats:
    """One image's contribution: per-category TP/FP/FN counts and matched-IoU sums."""

    tp: object
    fp: object
    fn: object
    iou: object
    area_mismatches: tuple[tuple[str, int, int, int], ...] = ()  # (side, segment id, JSON area, PNG area)


_LOOKUP: dict[str, object] = {}  # per device: an int32 table over the 24-bit id space, reused across images
_RUNS_PER_PIXEL = 0.5  # up to this share of runs (about where it stops paying), one value per run is read


class PanopticMetric(SummedMetric):
    """Per-category TP/FP/FN counts and matched-IoU sums (panopticapi ``pq_compute``).

    ``categories`` maps category id -> isthing. Several crowd segments of one
    category all count as crowd (panopticapi keeps only the last one).
    """

    def __init__(self, categories: Mapping[int, bool]):
        if not categories:
            raise LabelError("no categories to score; the ground truth must list its categories")
        self.categories = dict(categories)
        size = max(self.categories) + 1
        self.isthing = np.zeros(size, dtype=bool)
        self.known = np.zeros(size, dtype=bool)
        for category, thing in self.categories.items():
            self.known[category] = True
            self.isthing[category] = bool(thing)
        super().__init__()

    def _empty(self) -> list:
        return [np.zeros(len(self.known), dtype=dtype) for dtype in (np.int64, np.int64, np.int64, np.float64)]

    tp = property(lambda self: self.state[0])
    fp = property(lambda self: self.state[1])
    fn = property(lambda self: self.state[2])
    iou = property(lambda self: self.state[3])

    def _table(self, ops: _Arrays, ids, segments: Sequence[Segment], name: str, side: str):
        """Index per value (0 = not in the JSON, 1 = VOID, k + 1 = the k-th segment), and per segment index
        (0 = VOID): category, crowd; the keys.

        ``ids``: the segment id of each run or pixel (1-D, in pixel order). They are mapped through a lookup
        table over the 24-bit id space (kept between images), so no sort is needed.
        """
        if ids.shape[0]:
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= ID_SPACE:
                raise LabelError(f"{name}: {side} ids must be R + 256 G + 256^2 B values")
        keys = [VOID] + [s.id for s in segments]
        if len(set(keys)) != len(keys) or not all(0 < k < ID_SPACE for k in keys[1:]):
            raise LabelError(f"{name}: {side} segment ids must be distinct, non-zero 24-bit values")
        for segment in segments:
            if not (0 <= segment.category_id < len(self.known) and self.known[segment.category_id]):
                raise LabelError(f"{name}: {side} segment {segment.id} has unknown category "
                                 f"{segment.category_id}")
        where = str(ops.device)
        if where not in _LOOKUP:
            # Zeros are cheap: the pages are mapped lazily and only the few pages holding ids are touched.
            _LOOKUP[where] = ops.zeros(ID_SPACE, "int32")
        table = _LOOKUP[where]
        key_array = ops.new(keys, "int64")
        table[key_array] = ops.arange(1, len(keys) + 1, "int32")  # 0 means "not in the JSON"
        if ops.is_torch and ids.dtype != ops.dtype("int64"):
            ids = ops.cast(ids, "int64")
        index = ops.take(table, ids)  # int32: the joint index below stays int32 too
        table[key_array] = 0
        category = ops.new([-1] + [s.category_id for s in segments], "int64")
        crowd = ops.new([False] + [bool(s.iscrowd) for s in segments], "bool")
        return index, category, crowd, keys

    def update(self, pred_ids, pred_segments: Sequence[Segment], gt_ids, gt_segments: Sequence[Segment],
               name: str = "<image>") -> tuple:
        """Add one image: id maps (H, W) and their segments. Returns JSON/PNG area mismatches."""
        stats = self.image_stats(pred_ids, pred_segments, gt_ids, gt_segments, name)
        self.add(stats)
        return stats.area_mismatches

    def add(self, stats: PanopticStats) -> None:
        self._add([stats.tp, stats.fp, stats.fn, stats.iou])

    def image_stats(self, pred_ids, pred_segments: Sequence[Segment], gt_ids, gt_segments: Sequence[Segment],
                    name: str = "<image>") -> PanopticStats:
        """One image's TP/FP/FN/IoU sums, in the namespace (and on the device) of ``pred_ids``.

        Each map holds ids (H, W) or a panoptic PNG's RGB pixels (H, W, 3) uint8 (``images.read_panoptic_pixels``).
        """
        pred_shape, gt_shape = (tuple(a.shape[:2] if _is_rgb(a) else a.shape) for a in (pred_ids, gt_ids))
        if pred_shape != gt_shape:
            raise LabelError(f"{name}: prediction shape {pred_shape} != ground truth shape {gt_shape}")
        if _on_cpu(pred_ids):
            stats = self.image_stats(_to_numpy(pred_ids), pred_segments, _to_numpy(gt_ids), gt_segments, name)
            return PanopticStats(*(_as_torch(a) for a in (stats.tp, stats.fp, stats.fn, stats.iou)),
                                 area_mismatches=stats.area_mismatches)
        ops = _Arrays(pred_ids)
        xp = ops.xp
        gt, pred = _Pixels(ops, ops.adopt(gt_ids)), _Pixels(ops, pred_ids)
        # The per-pixel work: where the (GT id, predicted id) pair changes. Every pixel of a run has its first
        # pixel's ids, so the checks, the lookups and the intersections below read one value per run. Maps of
        # flat regions have a few runs per row; where runs are not much fewer than pixels (speckled maps), each
        # pixel is read as it is (the same sums, without the gathers).
        runs = ops.runs(gt.keys, pred.keys, gt.count, most=int(_RUNS_PER_PIXEL * gt.count))
        if runs is None:
            gt_ids, pred_ids, lengths = gt.every(), pred.every(), None
        else:
            starts, lengths = runs
            gt_ids, pred_ids, lengths = gt.at(starts), pred.at(starts), ops.cast(lengths, "float64")
        g_idx, g_cat, g_crowd, g_keys = self._table(ops, gt_ids, gt_segments, name, "ground-truth")
        p_idx, p_cat, _, p_keys = self._table(ops, pred_ids, pred_segments, name, "predicted")
        kg, kp = len(g_keys), len(p_keys)
        cells = (kg + 1) * (kp + 1)  # row and column 0: ids with no entry in the JSON
        joint = ops.weighted_sum(g_idx, p_idx, kp + 1, "int32" if cells < 2**31 else "int64")
        inter = ops.cast(xp.bincount(joint, weights=lengths, minlength=cells).reshape(kg + 1, kp + 1), "float64")
        for unknown, index, ids, side in ((inter[0].sum(), g_idx, gt_ids, "ground-truth"),
                                          (inter[:, 0].sum(), p_idx, pred_ids, "predicted")):
            if bool(unknown > 0):  # in pixel order: the first pixel holding such an id
                raise LabelError(f"{name}: {side} PNG has segment id {int(ids[_first(index == 0)])} with no "
                                 "entry in the JSON")
        inter = inter[1:, 1:]
        g_area, p_area = inter.sum(1), inter.sum(0)
        mismatches = []
        for area, keys, segments, side in ((g_area, g_keys, gt_segments, "ground-truth"),
                                           (p_area, p_keys, pred_segments, "predicted")):
            if bool((area[1:] == 0).any()):
                missing = keys[1 + _first(area[1:] == 0)]
                raise LabelError(f"{name}: {side} segment {missing} is in the JSON but not in the PNG")
            claimed = [(k, s.area) for k, s in enumerate(segments, start=1) if s.area is not None]
            if claimed:
                pixels = _to_numpy(area)
                mismatches += [(side, keys[k], a, int(pixels[k])) for k, a in claimed if a != int(pixels[k])]
        g_void, p_void = ops.zeros(kg, "bool"), ops.zeros(kp, "bool")
        g_void[0], p_void[0] = True, True  # compact index 0 is VOID
        void_inter = inter[0]  # per prediction: pixels on GT VOID
        same = g_cat[:, None] == p_cat[None, :]
        candidate = same & ~g_void[:, None] & ~g_crowd[:, None] & ~p_void[None, :] & (inter > 0)
        union = g_area[:, None] + p_area[None, :] - inter - void_inter[None, :]
        iou = xp.where(candidate, inter / union.clip(min=1), 0.0)
        matched = candidate & (iou > 0.5)  # IoU > 0.5: at most one match per segment
        g_matched, p_matched = matched.any(1), matched.any(0)
        size = len(self.known)
        matched_cat = g_cat[g_matched]
        missed = ~g_void & ~g_crowd & ~g_matched
        crowd_inter = (inter * (g_crowd[:, None] & same)).sum(0)
        ignored = (void_inter + crowd_inter) / p_area.clip(min=1) > 0.5
        false = ~p_void & ~p_matched & ~ignored
        return PanopticStats(
            tp=xp.bincount(matched_cat, minlength=size),
            fp=xp.bincount(p_cat[false], minlength=size),
            fn=xp.bincount(g_cat[missed], minlength=size),
            iou=ops.cast(xp.bincount(matched_cat, weights=(iou * matched).sum(1)[g_matched], minlength=size),
                         "float64"),
            area_mismatches=tuple(mismatches),
        )

    def compute(self) -> dict:
        tp, fp, fn, iou = (_to_numpy(a).astype(np.float64) for a in (self.tp, self.fp, self.fn, self.iou))
        seen = (tp + fp + fn > 0) & self.known
        denominator = np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-12)
        pq, rq = iou / denominator, tp / denominator
        sq = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
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
