"""Which of a model's classes are which of a dataset's: matched by name, never by position alone.

A model scored index by index against labels of another class order scores garbage without a word
(class 10 ``person`` against train id 10 ``sky``). :func:`align_classes` is the one place that decides
how a model's outputs meet a dataset's labels, for ``layerseg eval`` and ``layerseg sweep``:

* names equal in order (case, ``_`` and ``-`` aside): index by index, as stored;
* the model's classes a subset of the dataset's (a 16-class SYNTHIA head on the 19 Cityscapes classes):
  the model's classes are scored, and ground-truth pixels of the classes it lacks are ignored, as the
  SYNTHIA -> Cityscapes protocols map them to the ignore index;
* the dataset's classes a subset of the model's: the dataset's classes are scored; a pixel predicted as
  a class the dataset lacks is wrong (it counts in its true class's area, in no predicted area);
* another order of the same names: mapped by name;
* anything else (names on both sides that the other lacks, none in common): refused, naming both sets;
* a model without class names (transformers' ``LABEL_i`` defaults) or a dataset without them: index by
  index, as there is nothing to compare.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


class ClassMismatch(ValueError):
    """A model's classes and a dataset's that no name matching lines up."""


def normalised(name: str) -> str:
    """A class name for comparison: lower case, ``_``/``-`` as spaces, single spaces."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def is_unnamed(names: Sequence[str]) -> bool:
    """transformers' defaults (``LABEL_0``, ``LABEL_1``, ...) or bare indices: the model names no class."""
    return all(str(name) in (f"LABEL_{index}", str(index)) for index, name in enumerate(names))


@dataclass(frozen=True)
class ClassAlignment:
    """How a model's outputs meet a dataset's labels: the ``names`` scored (metric index order: the model's output
    order, in the dataset's spelling); for a mapping,
    the scored index of each dataset class (``from_label``) and of each model class (``from_prediction``), None
    where that class is not scored; both None when model and dataset line up index by index."""

    names: tuple[str, ...]
    from_label: tuple[int | None, ...] | None = None
    from_prediction: tuple[int | None, ...] | None = None
    note: str = ""

    @property
    def identity(self) -> bool:
        return self.from_label is None

    def tables(self, ignore_index: int, device) -> tuple | None:
        """(label table, prediction table) as uint8 tensors on ``device`` for ``table[values]`` look-ups; a class
        that is not scored becomes ``ignore_index``. None for index-by-index scoring."""
        if self.identity:
            return None
        import torch

        dtype = torch.uint8 if len(self.names) < 256 and 0 <= ignore_index < 256 else torch.int64
        label = torch.full((max(256, len(self.from_label)),), ignore_index, dtype=dtype)
        label[: len(self.from_label)] = torch.tensor([ignore_index if i is None else i for i in self.from_label])
        prediction = torch.tensor([ignore_index if i is None else i for i in self.from_prediction], dtype=dtype)
        return label.to(device), prediction.to(device)


def _listed(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def align_classes(model: Sequence[str], dataset: Sequence[str] | None, model_name: str = "the model",
                  dataset_name: str = "the dataset") -> ClassAlignment:
    """How ``model``'s classes (its id2label names, in output order) meet ``dataset``'s (its class names in label
    order; None: unnamed); see the module docstring. Raises :class:`ClassMismatch` naming both label sets."""
    model = [str(name) for name in model]
    if dataset is None or is_unnamed(model) or is_unnamed(dataset):
        return ClassAlignment(tuple(model))
    dataset = [str(name) for name in dataset]
    ours, theirs = [normalised(n) for n in model], [normalised(n) for n in dataset]
    if ours == theirs:
        return ClassAlignment(tuple(model))
    for names, who in ((ours, model_name), (theirs, dataset_name)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ClassMismatch(f"{who} names class {repeated[0]!r} twice; class names must be unique to be "
                                "matched (fix its id2label / class list)")
    only_model = [m for m, n in zip(model, ours) if n not in theirs]
    only_dataset = [d for d, n in zip(dataset, theirs) if n not in ours]
    if (only_model and only_dataset) or len(only_model) == len(model):
        raise ClassMismatch(
            f"the classes of {model_name} ({len(model)}: {_listed(model)}) do not line up with those of "
            f"{dataset_name} ({len(dataset)}: {_listed(dataset)}): {_listed(only_model)} "
            f"{'is' if len(only_model) == 1 else 'are'} not among the dataset's"
            + (f" and {_listed(only_dataset)} not among the model's" if only_dataset else "")
            + "; give the model an id2label with the dataset's class names (or the dataset a classes.txt with the "
            "model's), or evaluate on data of its classes")
    # in the model's order (a dataset in another order scores bit for bit as in the model's), the dataset's spelling
    spelling = dict(zip(theirs, dataset))
    scored = [spelling[n] for n in ours if n in spelling]
    position = {normalised(name): index for index, name in enumerate(scored)}
    if only_dataset:
        note = (f"scored on the model's {len(scored)} classes; ground truth of the dataset's "
                f"{_listed(only_dataset)} ignored")
    elif only_model:
        note = (f"scored on the dataset's {len(scored)} classes; pixels predicted as the model's "
                f"{_listed(only_model)} count as wrong")
    else:
        note = "the model's classes matched to the dataset's by name (another order)"
    return ClassAlignment(tuple(scored), tuple(position.get(n) for n in theirs), tuple(position.get(n) for n in ours),
                          note)
