"""Score predictions already on disk (the same inputs as mmsegmentation / panopticapi).

numpy only (``layerseg score`` starts without importing torch). Image pairs are
decoded and scored in worker processes, which send back only their small
per-image statistics; the main process sums them, like panopticapi's
``pq_compute`` does with its per-core chunks.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from layerseg_merge.eval.coco_json import read_coco_panoptic
from layerseg_merge.eval.images import IMAGE_SUFFIXES, DatasetError, read_label, read_panoptic_pixels
from layerseg_merge.eval.metrics import PanopticMetric, Segment, SemanticMetric


def _keep_freed_memory() -> None:
    """In a scoring worker (glibc): large arrays come from the heap, and freed memory stays for the next image.

    Every image pair allocates arrays of 2-16 MB; by default glibc maps each one afresh and unmaps it
    when freed, so every new array faults its pages in again: about a quarter of the CPU time of
    ``layerseg score panoptic`` at 1024x2048 (benchmarks/score_vs_panopticapi.py). Elsewhere: nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc-like
        return
    mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: mmap only above 1 GiB
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: give memory back only above 1 GiB free


def _parallel(function: Callable, items: list, workers: int, progress: bool) -> Iterator:
    """``function`` over ``items`` in ``workers`` processes, in order (0: in this process).

    At most two tasks per worker are in flight; on an error the pending ones are cancelled
    and the running ones finish before the error is raised (no terminate(), which can hang).
    """
    bar = tqdm(total=len(items), desc="score", unit="img", disable=not progress)
    try:
        if workers <= 0 or len(items) < 2:
            for item in items:
                result = function(item)
                bar.update()
                yield result
            return
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        count = min(workers, len(items))
        with ProcessPoolExecutor(count, mp_context=multiprocessing.get_context(method),
                                 initializer=_keep_freed_memory) as pool:
            remaining = iter(items)
            pending = deque(pool.submit(function, item) for item in islice(remaining, 2 * count))
            try:
                while pending:
                    result = pending.popleft().result()
                    pending.extend(pool.submit(function, item) for item in islice(remaining, 1))
                    bar.update()
                    yield result
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        bar.close()


def default_workers() -> int:
    """The cores this process may use (affinity mask, cgroup quota), at most 4."""
    from layerseg_merge.io.cpus import usable_cores

    return min(4, usable_cores()[0])


def _semantic_pair(pair: tuple[str, Path, Path], num_classes: int, ignore_index: int):
    name, gt, pred = pair
    label, prediction = read_label(gt), read_label(pred)
    if label.ndim != 2 or prediction.ndim != 2:
        raise DatasetError(f"{gt if label.ndim != 2 else pred}: a label must be a single-channel class-index PNG")
    return SemanticMetric(num_classes, ignore_index).image_stats(prediction, label, name=name)


def score_semantic(gt_dir: Path, pred_dir: Path, num_classes: int, ignore_index: int = 255,
                   class_names: list[str] | None = None, workers: int | None = None, progress: bool = True) -> dict:
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
    metric = SemanticMetric(num_classes, ignore_index)
    worker = partial(_semantic_pair, num_classes=num_classes, ignore_index=ignore_index)
    for confusion in _parallel(worker, pairs, default_workers() if workers is None else workers, progress):
        metric.add(confusion)
    return metric.compute(class_names)


def _segments(png: Path, segments_info: list[dict]) -> list[Segment]:
    try:
        return [Segment(s["id"], s["category_id"], bool(s.get("iscrowd", 0)), s.get("area")) for s in segments_info]
    except (KeyError, TypeError) as error:
        raise DatasetError(f"{png}: a segments_info entry lacks {error}") from error


def _panoptic_pair(pair: tuple[dict, dict], gt_folder: Path, pred_folder: Path, categories: dict[int, bool]):
    gt, pred = pair
    gt_png, pred_png = gt_folder / gt["file_name"], pred_folder / pred["file_name"]
    stats = PanopticMetric(categories).image_stats(
        read_panoptic_pixels(pred_png), _segments(pred_png, pred["segments_info"]),
        read_panoptic_pixels(gt_png), _segments(gt_png, gt["segments_info"]), name=gt["file_name"])
    return gt["file_name"], stats


def score_panoptic(gt_json: Path, gt_folder: Path, pred_json: Path, pred_folder: Path,
                   workers: int | None = None, progress: bool = True,
                   warn: Callable[[str], None] = lambda message: None) -> dict:
    """panopticapi ``pq_compute`` inputs: COCO panoptic JSON + PNG folder for GT and predictions.

    ``warn`` receives one line if JSON ``area`` values disagree with the PNGs (the PNGs are used).
    """
    gt, pred = read_coco_panoptic(gt_json), read_coco_panoptic(pred_json, ground_truth=False)
    categories = {c["id"]: bool(c.get("isthing", 0)) for c in gt["categories"]}
    predictions = {a["image_id"]: a for a in pred["annotations"]}
    pairs = []
    for annotation in gt["annotations"]:
        match = predictions.get(annotation["image_id"])
        if match is None:
            raise DatasetError(f"{pred_json}: no prediction for image_id {annotation['image_id']}")
        pairs.append((annotation, match))
    metric = PanopticMetric(categories)
    worker = partial(_panoptic_pair, gt_folder=gt_folder, pred_folder=pred_folder, categories=categories)
    mismatches = []
    for name, stats in _parallel(worker, pairs, default_workers() if workers is None else workers, progress):
        metric.add(stats)
        mismatches += [(name, *m) for m in stats.area_mismatches]
    if mismatches:
        name, side, segment, claimed, pixels = mismatches[0]
        warn(f"{len(mismatches)} segment(s) have a JSON `area` that disagrees with their PNG (first: {name}, "
             f"{side} segment {segment}: {claimed} in the JSON, {pixels} pixels); the PNG areas are used")
    from layerseg_merge.eval.reports import name_categories

    return name_categories(metric.compute(), gt["categories"])
