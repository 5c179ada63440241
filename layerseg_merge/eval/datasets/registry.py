"""The table of dataset kinds (``KIND:PATH`` on the command line): a new layout is its module plus one entry here.

:func:`open_dataset` and :func:`input_paths` read a spec through its kind; the command-line help, the
``--split`` semantics and the model cards' dataset entries come from the same entries.
"""

from __future__ import annotations

from layerseg_merge.eval.datasets import acdc, cityscapes, coco_panoptic, darkzurich, folder, mapillary
from layerseg_merge.eval.datasets.base import DatasetKind, ImageDataset, SemanticDataset
from layerseg_merge.eval.images import DatasetError

KINDS: dict[str, DatasetKind] = {kind.name: kind for kind in (
    cityscapes.KIND, cityscapes.PANOPTIC_KIND, acdc.KIND, darkzurich.KIND, mapillary.KIND, coco_panoptic.KIND,
    folder.KIND, folder.IMAGES_KIND,
)}


def register_kind(kind: DatasetKind) -> None:
    """Add a dataset layout (a name given twice is an error)."""
    if kind.name in KINDS:
        raise ValueError(f"a dataset kind named {kind.name!r} is already registered")
    KINDS[kind.name] = kind


def usage(task: str | None = None) -> str:
    """``KIND:PATH | ...`` of every kind (that serves ``task``)."""
    return " | ".join(kind.spec for kind in KINDS.values() if task is None or task in kind.tasks)


def split_readers() -> list[str]:
    """The kinds for which ``--split`` chooses what is read."""
    return [name for name, kind in KINDS.items() if kind.reads_split]


def dataset_kind(spec: str) -> tuple[DatasetKind, str]:
    """The kind of ``KIND:PATH`` and its PATH."""
    name, _, path = spec.partition(":")
    if name not in KINDS:
        raise DatasetError(f"unknown dataset kind {name!r}; use {usage()}")
    return KINDS[name], path


def input_paths(spec: str) -> tuple[str, ...]:
    """The files and folders a dataset spec ``KIND:PATH`` reads (ACDC's conditions, Mapillary's table are not
    paths); an unknown kind reads nothing (it is refused when opened)."""
    name, _, path = spec.partition(":")
    return KINDS[name].paths(path) if name in KINDS else ()


def evaluated_split(spec: str, split: str) -> str | None:
    """The split of ``spec`` that was really read: None for kinds read whole (a folder, a COCO panoptic set)."""
    name = spec.partition(":")[0]
    return split if name in KINDS and KINDS[name].reads_split else None


def card_dataset(spec: str) -> tuple[str, str, str | None]:
    """(dataset type, dataset name, config) of ``spec`` for Hugging Face model-index results."""
    kind, path = dataset_kind(spec)
    return kind.card(path)


def open_dataset(spec: str, split: str = "val", task: str = "semantic"):
    """A dataset from its spec ``KIND:PATH``, for ``task`` (semantic, panoptic, or images: the images of any kind
    without their labels)."""
    kind, path = dataset_kind(spec)
    if task == "images" and task not in kind.tasks:
        labelled = kind.opener(path, split, kind.tasks[0])
        items = labelled.pairs if isinstance(labelled, SemanticDataset) else [
            (name, entry.image) for name, entry in labelled.entries]
        return ImageDataset([(item[0], item[1]) for item in items])
    if task not in kind.tasks:
        if kind.tasks == ("images",):
            raise DatasetError(f"{kind.name}:ROOT has no labels; it serves recalibration and --unsupervised only")
        others = usage(task) or "none"
        raise DatasetError(f"{kind.name} ground truth is {' and '.join(kind.tasks)}, not {task}; evaluate it with "
                           f"--task {kind.tasks[0]}, or use data with {task} ground truth ({others})")
    return kind.opener(path, split, task)
