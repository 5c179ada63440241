"""Run a model over a dataset and score it; sharded over ranks under torchrun.

The pipeline keeps the device busy: DataLoader workers decode images into uint8
batches (pinned memory on CUDA); the next batch is copied to the device on a side
stream while the current one runs; preprocessing, the forward pass, upsampling,
argmax and the metric all stay on the device, and the metric's checks read back
one batch late so that nothing waits for the GPU in between.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from layerseg_merge.eval.batching import CarryErrors, collate_batch
from layerseg_merge.eval.class_subsets import subset_names
from layerseg_merge.eval.datasets import evaluated_split, input_paths, open_dataset
from layerseg_merge.eval.inference import Segmenter, pick_device
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.eval.painting import Painter, check_show, painting
from layerseg_merge.eval.tasks import TASKS
from layerseg_merge.models.info import ModelInfo


def distributed_context(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def gather_rows(rows: torch.Tensor, positions: list[int], total: int, device: torch.device) -> torch.Tensor:
    """Every rank's float64 ``rows`` at their ``positions`` of one (``total``, D) table, the same on every rank.

    Each row comes from one rank and the others add exact zeros, so what is computed from the table
    (in its order) does not depend on the number of ranks.
    """
    table = torch.zeros(total, *rows.shape[1:], dtype=torch.float64, device=device)
    if len(positions):
        table[torch.as_tensor(positions, device=device)] = rows.to(device, torch.float64)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(table)
    return table


def open_data(on: DataOptions, task: str):
    """The dataset ``on`` names, for ``task`` (semantic, panoptic or images), cut to its first ``on.limit`` samples
    (keeping the dataset's attributes: categories, class names)."""
    if not isinstance(on, DataOptions):
        raise TypeError(f"give the data as DataOptions({on!r}) (with split, limit, workers), not a bare "
                        f"{type(on).__name__}")
    dataset = open_dataset(on.data, on.split, task)
    if on.limit is None:
        return dataset
    subset = torch.utils.data.Subset(dataset, range(min(on.limit, len(dataset))))
    for attribute in ("categories", "class_names", "task"):
        if hasattr(dataset, attribute):
            setattr(subset, attribute, getattr(dataset, attribute))
    return subset


def _move(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list):
        return [_move(v, device) for v in value]
    return value


def _claim(value, stream) -> None:
    """Tell the caching allocator that tensors copied on a side stream are used on ``stream``."""
    if isinstance(value, torch.Tensor):
        value.record_stream(stream)
    elif isinstance(value, list):
        for item in value:
            _claim(item, stream)


def on_device(batches: Iterable[dict], device: torch.device, keys: tuple[str, ...]) -> Iterator[dict]:
    """``batches`` with ``keys`` moved to ``device``; on CUDA the next batch is copied while this one runs."""
    if device.type != "cuda":
        for batch in batches:
            yield {k: (_move(v, device) if k in keys else v) for k, v in batch.items()}
        return
    stream = torch.cuda.Stream(device)

    def send(batch: dict) -> dict:
        with torch.cuda.stream(stream):
            return {k: (_move(v, device) if k in keys else v) for k, v in batch.items()}

    upcoming = None
    for batch in batches:
        current, upcoming = upcoming, send(batch)
        if current is not None:
            yield current
        torch.cuda.current_stream(device).wait_stream(stream)
        for key in keys:
            _claim(upcoming.get(key), torch.cuda.current_stream(device))
    if upcoming is not None:
        yield upcoming


def join_ranks(device: str) -> tuple[torch.device, int, int]:
    """This process's device and (rank, world size); under torchrun each rank takes its own GPU."""
    chosen = pick_device(device)
    rank, world = distributed_context(chosen)
    if world > 1 and chosen.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        chosen = torch.device("cuda", local)
    return chosen, rank, world


def shard(dataset, rank: int, world: int):
    """This rank's part of ``dataset``: every ``world``-th sample from ``rank``."""
    return torch.utils.data.Subset(dataset, range(rank, len(dataset), world))


def host_batches(dataset, batch_size: int, workers: int, pin: bool) -> Iterator[dict]:
    """Batches of ``dataset`` decoded in ``workers`` processes (in pinned memory with ``pin``); a sample that
    failed to load raises its own error here."""
    loader = torch.utils.data.DataLoader(
        CarryErrors(dataset), batch_size=batch_size, collate_fn=collate_batch, num_workers=workers,
        persistent_workers=False, pin_memory=pin, prefetch_factor=4 if workers else None)
    for batch in loader:
        if batch.get("failed") is not None:
            batch["failed"].raise_error()
        yield batch


def device_batches(dataset, device: torch.device, batch_size: int, workers: int,
                   keys: tuple[str, ...]) -> Iterator[dict]:
    """:func:`host_batches` with ``keys`` on ``device``."""
    yield from on_device(host_batches(dataset, batch_size, workers, device.type == "cuda"), device, keys)


def _pad_batch(images, size: int):
    """Repeat the last image up to ``size`` (a compiled model sees one batch shape)."""
    if isinstance(images, torch.Tensor) and len(images) < size:
        return torch.cat([images, images[-1:].expand(size - len(images), *images.shape[1:])])
    return images


def check_classes(info: ModelInfo, dataset, task: str, model: str) -> None:
    """Refuse, before any work, a model whose classes do not line up with the dataset's by name
    (:func:`layerseg_merge.eval.class_alignment.align_classes`)."""
    TASKS[task].check(info, dataset, model)


def score_batches(segmenter: Segmenter, batches: Iterable[dict], task: str, dataset, ignore_index: int = 255,
                  classes: int = 19, pad_to: int | None = None, bar=None,
                  painter: Painter | None = None) -> tuple[dict, int, float | None]:
    """``segmenter`` over host ``batches`` of ``dataset`` (moved to its device here), scored for ``task``
    (:data:`layerseg_merge.eval.tasks.TASKS`); the metric is all-reduced over ranks. Returns the report, the images
    this rank scored and when its first batch arrived. ``pad_to``: the batch size a compiled model expects;
    ``painter`` is handed every batch's scored predictions (:mod:`layerseg_merge.eval.painting`).
    """
    scoring = TASKS[task](segmenter, dataset, ignore_index)
    if painter is not None:
        painter.bind(scoring)
    keys = (scoring.target, "images") if segmenter.fast else (scoring.target,)
    first = None  # when the first batch arrived: throughput excludes the workers' start-up
    images = 0
    for batch in on_device(batches, segmenter.device, keys):
        first = first or time.perf_counter()
        count = len(batch["names"])
        pictures = _pad_batch(batch["images"], pad_to) if pad_to else batch["images"]
        sizes = [tuple(t.shape[-2:]) for t in batch[scoring.target]]
        sizes += sizes[-1:] * (len(pictures) - count)
        scored = scoring.add(batch, pictures, sizes, count)
        if painter is not None:
            painter.add(batch["names"], batch["images"], scored)
        images += count
        if bar is not None:
            bar.update(count)
            bar.set_postfix(img_s=f"{images / (time.perf_counter() - first):.1f}")
    scoring.metric.reduce(segmenter.device)
    return scoring.report(classes), images, first


def evaluate(model_dir: str | Path, on: DataOptions, task: str = "semantic",
             infer: InferenceOptions = InferenceOptions(), *, classes: int = 19, ignore_index: int = 255,
             progress: bool = True, tensors: dict | None = None, show_dir: str | Path | None = None,
             show: int | None = None) -> dict:
    """Score ``model_dir`` on ``on`` as ``infer`` says; returns the DESIGN.md §5 report (plus ``timing``).

    ``tensors``: weights to score instead of the directory's (an in-memory merge). ``classes``: 16 or 13
    averages over SYNTHIA's subsets of the Cityscapes classes (:mod:`layerseg_merge.eval.class_subsets`).
    ``show_dir``: paint the predictions there, ``show`` of them spread over the split (None: all;
    :mod:`layerseg_merge.eval.painting`).
    """
    subset_names(classes)  # a wrong value fails before the work
    check_show(show_dir, show)
    dataset = open_data(on, task)
    check_classes(ModelInfo.from_dir(model_dir), dataset, task, str(model_dir))
    chosen, rank, world = join_ranks(infer.device)
    segmenter = Segmenter(model_dir, replace(infer, device=str(chosen)), tensors=tensors)
    part = shard(dataset, rank, world)
    bar = tqdm(total=len(part), desc=f"eval {Path(model_dir).name}", unit="img",
               disable=not progress or rank != 0)
    started = time.perf_counter()
    about = {"model": str(model_dir), "data": on.data, "split": evaluated_split(on.data, on.split), "task": task}
    try:
        with painting(show_dir, show, len(dataset), rank, world, inputs=(model_dir, *input_paths(on.data)),
                      about=about) as painter:
            batches = host_batches(part, infer.batch_size, on.decoders(segmenter.device.type),
                                   segmenter.device.type == "cuda")
            report, images, first = score_batches(segmenter, batches, task, dataset, ignore_index, classes,
                                                  infer.batch_size if infer.compile else None, bar, painter)
    finally:
        bar.close()
    ended = time.perf_counter()
    report["timing"] = {"images": images * world, "seconds": ended - (first or started),
                        "startup_seconds": (first or ended) - started,
                        "forward_seconds": segmenter.forward_seconds, "device": str(segmenter.device)}
    from layerseg_merge.eval.provenance import KEY, provenance

    report[KEY] = provenance(model_dir, on, task, infer, report, segmenter, len(dataset), world, tensors is not None,
                             show_dir)
    return report
