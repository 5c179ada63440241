"""``layerseg predict``: a model's predictions written as files, for splits without labels and for servers.

The inference is ``evaluate``'s, piece for piece (:class:`Segmenter`, its device preprocessing or the mmseg test
pipeline, ``--slide``, ``--amp``, the same batches of the same images, :func:`shard` under torchrun), so the
files hold exactly what ``layerseg eval`` scores: ``layerseg score`` on them gives ``eval``'s numbers. Classes
are matched by name as ``eval`` matches them (:mod:`layerseg_merge.eval.class_alignment`): a semantic
prediction is written in the dataset's class indices where the dataset names its classes (in the 19 Cityscapes
train ids for the server formats), a panoptic one in the dataset's categories. Each rank encodes and writes its
own images in a background thread; rank 0 writes the JSON files and the archive; the folder appears atomically
(:mod:`layerseg_merge.eval.rank_output`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from layerseg_merge.eval.background import BackgroundWork
from layerseg_merge.eval.class_alignment import ClassMismatch, align_classes, is_unnamed, normalised
from layerseg_merge.eval.datasets import CITYSCAPES_CLASSES, evaluated_split, input_paths
from layerseg_merge.eval.evaluate import _pad_batch, host_batches, join_ranks, on_device, shard
from layerseg_merge.eval.inference import Segmenter, label_to_category
from layerseg_merge.eval.options import DataOptions, InferenceOptions
from layerseg_merge.eval.rank_output import shared_folder
from layerseg_merge.eval.split_images import SplitImages, cityscapes_categories, split_images
from layerseg_merge.eval.submission import (
    ARCHIVE,
    IGNORE,
    MANIFEST,
    Format,
    image_id,
    is_prediction_folder,
    panoptic_json,
    panoptic_names,
    panoptic_png,
    resolve_format,
    rgb_ids,
    segments_info,
    semantic_files,
    server_files,
    write_archive,
)
from layerseg_merge.models.info import ModelInfo


def class_table(model: Sequence[str], target: Sequence[str] | None, model_dir: str, form: Format) -> list[int] | None:
    """Model class index -> the output's class index (:data:`IGNORE` for a class the output lacks), matched by name
    as ``eval`` matches them; None: written as the model predicts them."""
    what = "the 19 Cityscapes classes" if form.cityscapes else "the dataset"
    alignment = align_classes(model, target, f"the model {model_dir}", what)
    if alignment.identity:
        if form.cityscapes and len(model) != len(CITYSCAPES_CLASSES):
            raise ClassMismatch(f"the model {model_dir} names no classes and has {len(model)}; the {form.name} format "
                                "needs the 19 Cityscapes classes: give the model an id2label with their names")
        return None
    position = {normalised(name): index for index, name in enumerate(target)}
    return [position.get(normalised(name), IGNORE) for name in model]


def panoptic_categories(info: ModelInfo, data: SplitImages, model_dir: str) -> dict[int, dict]:
    """The categories a panoptic prediction is written in: the data's; for data without any, the Cityscapes label
    ids (a model of Cityscapes classes) or the model's own classes (a center/offset head, which says its things)."""
    if data.categories is not None:
        return data.categories
    names = [normalised(name) for name in info.labels]
    if set(names) <= {normalised(name) for name in CITYSCAPES_CLASSES} and not is_unnamed(info.labels):
        return cityscapes_categories()
    if info.panoptic_head:
        things = set(info.panoptic_head.get("thing_ids", ()))
        return {index + 1: {"id": index + 1, "name": name, "isthing": int(index in things)}
                for index, name in enumerate(info.labels)}
    shown = ", ".join(info.labels[:6]) + (", ..." if len(info.labels) > 6 else "")
    raise ClassMismatch(f"{model_dir}: its classes ({shown}) are not Cityscapes classes and the data has no panoptic "
                        "categories to tell things from stuff; predict on data with panoptic ground truth "
                        "(coco-panoptic:, cityscapes-panoptic:)")


def _save_png(path: Path, pixels: np.ndarray) -> None:
    os.makedirs(path.parent, exist_ok=True)
    if pixels.ndim == 2 and pixels.dtype != np.uint8:
        pixels = pixels.astype(np.uint16)
    Image.fromarray(pixels).save(path)


def _sizes(images, count: int, padded: int) -> list[tuple[int, int]]:
    sizes = [tuple(image.shape[-2:]) for image in images[:count]]
    return sizes + sizes[-1:] * (padded - count)


def semantic_with_confidence(segmenter: Segmenter, images, sizes) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """:meth:`Segmenter.semantic`'s class maps (the same operations, so the same classes) and each pixel's softmax
    probability of its class."""
    classes = len(segmenter.id2label)
    if len(set(sizes)) == 1:
        logits = segmenter.logits(images, sizes)[:, :classes]
        return list(logits.argmax(1)), list(logits.softmax(1).amax(1))
    logits = [segmenter.logits([image], [size])[0, :classes] for image, size in zip(images, sizes)]
    return [one.argmax(0) for one in logits], [one.softmax(0).amax(0) for one in logits]


class SemanticWriter:
    """Writes class maps (and confidences) of one rank's images in the format's layout."""

    def __init__(self, form: Format, table: list[int] | None, folder: Path, segmenter: Segmenter):
        self.form, self.folder, self.segmenter = form, folder, segmenter
        self.table = None if table is None else torch.tensor(table, device=segmenter.device)
        largest = len(segmenter.id2label) - 1 if table is None else max(table)
        self.dtype = np.uint8 if largest < 256 else np.uint16

    def batch(self, names: Sequence[str], pictures, sizes, count: int) -> list[Callable[[], dict]]:
        """Predict a batch; returns, per image, the task that writes its files (in the background)."""
        if self.form.confidence:
            classes, confidences = semantic_with_confidence(self.segmenter, pictures, sizes)
        else:
            classes, confidences = self.segmenter.semantic(pictures, sizes), [None] * len(sizes)
        tasks = []
        for name, prediction, confidence in zip(names, classes[:count], confidences[:count]):
            if self.table is not None:
                prediction = self.table[prediction]
            tasks.append(self._task(name, prediction, confidence))
        return tasks

    def _task(self, name: str, prediction: torch.Tensor, confidence: torch.Tensor | None) -> Callable:
        def write() -> dict:
            pixels = prediction.cpu().numpy().astype(self.dtype)
            files = semantic_files(self.form, name, pixels, None if confidence is None else confidence.cpu().numpy())
            for path, values in files.items():
                _save_png(self.folder / path, values)
            return {"files": sorted(files)}

        return write


class PanopticWriter:
    """Writes segment-id PNGs of one rank's images; their ``segments_info`` go into rank 0's JSON."""

    def __init__(self, form: Format, categories: dict[int, dict], folder: Path, segmenter: Segmenter, split: str,
                 ground_truth_ids: dict | None, images: dict[str, Path]):
        segmenter.require_panoptic()
        self.form, self.folder, self.segmenter = form, folder, segmenter
        self.ids, self.images = ground_truth_ids, images  # image ids of the ground truth; name -> image file
        self.png_folder = panoptic_names(form, split)[1]
        self.mapping = label_to_category(segmenter.id2label, categories)
        self.stuff = {label for label, category in self.mapping.items() if not categories[category].get("isthing", 0)}

    def batch(self, names: Sequence[str], pictures, sizes, count: int) -> list[Callable[[], dict]]:
        """Predict a batch; returns, per image, the task that writes its PNG and returns its JSON entries."""
        results = self.segmenter.panoptic(pictures, sizes, self.mapping, self.stuff)[:count]
        return [self._task(name, ids, segments) for name, (ids, segments) in zip(names, results)]

    def _task(self, name: str, ids: torch.Tensor, segments) -> Callable:
        def write() -> dict:
            pixels = ids.cpu().numpy()
            identifier = image_id(name, self.ids)
            png = panoptic_png(self.form, name, identifier)
            _save_png(self.folder / self.png_folder / png, rgb_ids(pixels))
            height, width = pixels.shape
            return {"files": [f"{self.png_folder}/{png}"],
                    "image": {"id": identifier, "file_name": self.images[name].name, "width": width,
                              "height": height},
                    "annotation": {"image_id": identifier, "file_name": png,
                                   "segments_info": segments_info(pixels, segments)}}

        return write


def _check_classes(form: Format, info: ModelInfo, data: SplitImages, model_dir: str):
    """What a prediction is written in, checked before the model is loaded: the class table (semantic) or the
    categories (panoptic)."""
    if form.task == "panoptic":
        if not info.gives_panoptic:
            raise ValueError(f"{model_dir}: a semantic model; --task panoptic needs a universal segmentation model "
                             "(Mask2Former, MaskFormer, OneFormer) or a center/offset panoptic head")
        # the Cityscapes server's label ids, whatever the data's ground truth uses
        categories = cityscapes_categories() if form.name == "cityscapes-panoptic" else \
            panoptic_categories(info, data, model_dir)
        label_to_category(dict(enumerate(info.labels)), categories)
        return categories
    if form.confidence and info.universal:
        raise ValueError(f"{model_dir}: the {form.name} format's confidence maps need per-pixel class scores, which "
                         "a universal (mask classification) model does not give; use --format acdc or train-ids")
    target = list(CITYSCAPES_CLASSES) if form.cityscapes else data.class_names
    return class_table(info.labels, target, model_dir, form)


def predict(model_dir: str | Path, on: DataOptions, out: str | Path, task: str | None = None,
            form: str | None = None, infer: InferenceOptions = InferenceOptions(), *, archive: bool = False,
            overwrite: bool = False, progress: bool = True,
            log: Callable[[str], None] = lambda message: None) -> dict | None:
    """Write ``model_dir``'s predictions on ``on`` into the folder ``out`` in the format ``form`` (default: train-id
    PNGs, or COCO panoptic for ``task`` panoptic); ``archive``: also ``out/submission.zip`` with the server's
    layout; ``overwrite``: replace a previous prediction folder there. Returns what was written (the manifest,
    ``out/layerseg_predict.json``; None on the other ranks under torchrun)."""
    chosen_format = resolve_format(form, task)
    data = split_images(on.data, on.split, chosen_format.task)
    dataset = data.dataset
    if on.limit is not None:
        dataset = type(dataset)(dataset.images[: on.limit])
    paths = dict(dataset.images)
    chosen_format.check_names(paths)
    info = ModelInfo.from_dir(model_dir)
    classes = _check_classes(chosen_format, info, data, str(model_dir))
    device, rank, world = join_ranks(infer.device)
    inputs = (model_dir, *input_paths(on.data))
    with shared_folder(out, rank, world, inputs=inputs, overwrite=overwrite, replaceable=is_prediction_folder,
                       log=log) as folder:
        segmenter = Segmenter(model_dir, replace(infer, device=str(device)))
        if chosen_format.task == "panoptic":
            writer = PanopticWriter(chosen_format, classes, folder.staging, segmenter, on.split, data.image_ids,
                                    paths)
        else:
            writer = SemanticWriter(chosen_format, classes, folder.staging, segmenter)
        part = shard(dataset, rank, world)
        written: list[tuple[int, dict]] = []
        started = time.perf_counter()
        keys = ("images",) if segmenter.fast else ()
        with tqdm(total=len(part), desc=f"predict {Path(model_dir).name}", unit="img",
                  disable=not progress or rank != 0) as bar, BackgroundWork() as work:
            batches = host_batches(part, infer.batch_size, on.decoders(segmenter.device.type),
                                   segmenter.device.type == "cuda")
            for batch in on_device(batches, segmenter.device, keys):
                count = len(batch["names"])
                pictures = _pad_batch(batch["images"], infer.batch_size) if infer.compile else batch["images"]
                for write in writer.batch(batch["names"], pictures, _sizes(pictures, count, len(pictures)), count):
                    record: dict = {}
                    written.append((rank + len(written) * world, record))  # its position in the split
                    work.submit(lambda write=write, record=record: record.update(write()))
                bar.update(count)
        seconds = time.perf_counter() - started
        records = [entry for ranks_records in folder.gather(written) or [] for entry in ranks_records]
        manifest = None
        if rank == 0:
            manifest = _finish(folder.staging, chosen_format, records, classes, model_dir, on, archive, seconds, world)
        folder.commit()
    return manifest


def _finish(folder: Path, form: Format, records: list[tuple[int, dict]], classes, model_dir, on: DataOptions,
            archive: bool, seconds: float, world: int) -> dict:
    """Rank 0, once every rank's images are written: the panoptic JSON, the archive and the manifest."""
    records = [record for _, record in sorted(records, key=lambda entry: entry[0])]
    if form.task == "panoptic":
        json_name, _ = panoptic_names(form, on.split)
        text = panoptic_json([r["image"] for r in records], [r["annotation"] for r in records], classes)
        (folder / json_name).write_text(text, encoding="utf-8")
    members = server_files(folder)
    files = [*members, *([ARCHIVE] if archive else [])]
    if archive:
        write_archive(folder, members)
    manifest = {"format": form.name, "task": form.task, "model": str(model_dir), "data": on.data,
                "split": evaluated_split(on.data, on.split), "images": len(records), "ranks": world,
                "seconds": seconds, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
