"""What an evaluation measured, recorded in its report under ``provenance``: the model and a digest of its weights,
the data read, the classes averaged, the inference pipeline, the versions and the date.

A result quoted without these cannot be checked: the same mIoU means something else on 8 images than on
Cityscapes val, and a merged folder re-written in place holds other weights under the same path. The digest is
the sha256 of each weight file, streamed (hashlib.file_digest: about 0.2 s for a 340 MB SegFormer-B5 file read
from the page cache on one core of a machine with SHA instructions; a cold read costs what the disk takes).
"""

from __future__ import annotations

import datetime
import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from layerseg_merge.eval.datasets import dataset_kind, evaluated_split, input_paths
from layerseg_merge.eval.report_metrics import task_of
from layerseg_merge.models.info import ModelInfo

if TYPE_CHECKING:
    from layerseg_merge.eval.inference import Segmenter
    from layerseg_merge.eval.options import DataOptions, InferenceOptions

KEY = "provenance"  # the one report key beside DESIGN.md's
DISTRIBUTIONS = ("layerseg-merge", "mergekit", "torch", "transformers")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def weight_digests(model_dir: str | Path) -> dict[str, str]:
    """``{file name: sha256}`` of the weight files of a model directory (each shard of a sharded one)."""
    from layerseg_merge.io.checkpoint import weight_files

    return {path.name: file_sha256(path) for path in weight_files(model_dir)}


def versions() -> dict[str, str | None]:
    """The installed versions of this package and what it runs on, from the installed metadata (nothing imported:
    evaluating imports no mergekit); None for one that is not installed."""
    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {name: installed(name) for name in DISTRIBUTIONS} | {"python": platform.python_version()}


def averaged_classes(report: dict) -> list[str]:
    """The classes (panoptic: ``name (id)`` categories) that enter the report's mean: those with a value."""
    if task_of(report) == "panoptic":
        return [f"{entry['name']} ({cid})" if entry.get("name") else cid
                for cid, entry in report["per_class"].items() if entry.get("pq") is not None]
    return [name for name, entry in report["per_class"].items() if entry.get("IoU") is not None]


def data_record(on: DataOptions, images: int) -> dict:
    """The data ``on`` names as it was read: kind, PATH, its files and folders resolved, what PATH chooses besides
    (ACDC conditions, Mapillary's id table), the split really read (None: read whole), the limit and the images
    scored."""
    kind, path = dataset_kind(on.data)
    return {"spec": on.data, "kind": kind.name, "root": path,
            "paths": [str(Path(p).resolve()) for p in input_paths(on.data)], "config": kind.config(path),
            "split": evaluated_split(on.data, on.split), "limit": on.limit, "images": images}


def pipeline_record(segmenter: Segmenter, task: str, infer: InferenceOptions, world: int) -> dict:
    """How the images went through the model: device, autocast, sliding windows, where preprocessing ran (the
    transformers processor, the device, or the mmseg test pipeline and test procedure of an imported model, recorded
    as used), batch size, compilation and the processes that shared the data."""
    mmseg = None
    if segmenter.mmseg_pipeline is not None:
        settings = ModelInfo.from_dir(segmenter.model_dir).mmseg or {}
        mmseg = {"kind": settings.get("kind"), "test_pipeline": segmenter.mmseg_pipeline,
                 "inference": settings.get("inference")}
    return {"task": task, "device": str(segmenter.device), "amp": infer.amp,
            "slide": list(infer.slide) if infer.slide else None, "preprocess": infer.preprocess,
            "preprocessing": "mmseg" if mmseg else ("device" if segmenter.fast else "processor"),
            "batch_size": infer.batch_size, "compile": infer.compile, "processes": world, "mmseg": mmseg,
            "test_scale": list(infer.test_scale) if infer.test_scale is not None else None}


def provenance(model_dir: str | Path, on: DataOptions, task: str, infer: InferenceOptions, report: dict,
               segmenter: Segmenter, images: int, world: int = 1, in_memory: bool = False,
               show_dir: str | Path | None = None) -> dict:
    """The ``provenance`` entry of an evaluation report; ``images``: those scored over all processes;
    ``in_memory``: the weights scored were given in memory (a merge not written), so no file digest describes
    them; ``show_dir``: the folder of the painted predictions (``eval --show-dir``; its ``index.json`` lists them),
    for the report page (:mod:`layerseg_merge.eval.report_page`)."""
    model = {"path": str(model_dir), "resolved": str(Path(model_dir).resolve()),
             "architecture": ModelInfo.from_dir(model_dir).architecture,
             "weights": None if in_memory else weight_digests(model_dir), "in_memory": in_memory}
    return {"model": model, "data": data_record(on, images),
            "classes": {"averaged": averaged_classes(report), "subset": len(report["classes"]) if report.get("classes")
                        else None},
            "pipeline": pipeline_record(segmenter, task, infer, world), "versions": versions(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "show_dir": str(Path(show_dir).resolve()) if show_dir is not None else None}

