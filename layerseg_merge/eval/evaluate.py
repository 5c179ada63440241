"""Run a model over a dataset and score it; sharded over ranks under torchrun."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from layerseg_merge.eval.datasets import CarryErrors, checked, collate, open_dataset
from layerseg_merge.eval.inference import Segmenter, label_to_category
from layerseg_merge.eval.metrics import PanopticMetric, SemanticMetric


def distributed_context(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _first(dataset, count: int):
    """The first ``count`` samples, keeping the dataset's attributes (categories, class names)."""
    subset = torch.utils.data.Subset(dataset, range(min(count, len(dataset))))
    for attribute in ("categories", "class_names", "task"):
        if hasattr(dataset, attribute):
            setattr(subset, attribute, getattr(dataset, attribute))
    return subset


def evaluate(model_dir: str | Path, data: str, split: str = "val", task: str = "semantic",
             device: str = "auto", batch_size: int = 4, amp: str = "off",
             slide: tuple[int, int] | None = None, workers: int = 2, ignore_index: int = 255,
             progress: bool = True, limit: int | None = None) -> dict:
    """Score ``model_dir`` on ``data``; returns the DESIGN.md §5 report (plus ``timing``)."""
    dataset = open_dataset(data, split, task)
    if limit is not None:
        dataset = _first(dataset, limit)
    segmenter = Segmenter(model_dir, device=device, amp=amp, slide=slide)
    rank, world = distributed_context(segmenter.device)
    if world > 1 and segmenter.device.type == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(CarryErrors(shard), batch_size=batch_size, collate_fn=collate,
                                         num_workers=workers, persistent_workers=False)
    if task == "semantic":
        num_classes = len(segmenter.id2label)
        metric = SemanticMetric(num_classes, ignore_index)
    else:
        segmenter.require_panoptic()
        categories = dataset.categories
        metric = PanopticMetric({c: bool(v.get("isthing", 0)) for c, v in categories.items()})
        mapping = label_to_category(segmenter.id2label, categories)
        stuff = {label for label, category in mapping.items() if not categories[category].get("isthing", 0)}
    start, images = time.perf_counter(), 0
    bar = tqdm(total=len(shard), desc=f"eval {Path(model_dir).name}", unit="img",
               disable=not progress or rank != 0)
    try:
        for batch in loader:
            batch = [checked(sample) for sample in batch]
            pictures = [sample["image"] for sample in batch]
            if task == "semantic":
                for sample, prediction in zip(batch, segmenter.semantic(pictures)):
                    if num_classes < 255:  # smaller maps take the metric's fastest path
                        prediction = prediction.to(torch.uint8)
                    metric.update(prediction, sample["label"], name=sample["name"])
            else:
                for sample, (ids, segments) in zip(batch, segmenter.panoptic(pictures, mapping, stuff)):
                    metric.update(ids, segments, sample["panoptic"], sample["segments"], name=sample["name"])
            images += len(batch)
            bar.update(len(batch))
            bar.set_postfix(img_s=f"{images / (time.perf_counter() - start):.1f}")
    finally:
        bar.close()
    metric.reduce(segmenter.device)
    elapsed = time.perf_counter() - start
    if task == "semantic":
        names = [segmenter.id2label[i] for i in range(num_classes)]
        report = metric.compute(names)
    else:
        report = metric.compute()
    report["timing"] = {"images": images * world, "seconds": elapsed,
                        "forward_seconds": segmenter.forward_seconds, "device": str(segmenter.device)}
    return report
