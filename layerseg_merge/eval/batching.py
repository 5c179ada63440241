"""From dataset samples to device-ready batches in DataLoader workers: collation, and errors carried as values.

A worker re-raises a dataset's error in the main process wrapped in "Caught X in DataLoader worker process
0" and a traceback; carried as a value (:class:`CarryErrors`), the message reaches the user as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from layerseg_merge.eval.images import DatasetError
from layerseg_merge.eval.metrics import LabelError


@dataclass(frozen=True)
class FailedSample:
    """A sample that could not be read: the error travels as a value (see :class:`CarryErrors`)."""

    error_type: type
    message: str

    def raise_error(self):
        raise self.error_type(self.message)


class CarryErrors:
    """Return a dataset's own errors as values instead of raising them in a DataLoader worker.

    A worker re-raises errors in the main process wrapped in "Caught X in DataLoader worker
    process 0" and a worker traceback; carried as a value, the message reaches the user as is.
    """

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except (DatasetError, LabelError) as error:
            return FailedSample(type(error), str(error))


def checked(sample):
    """``sample``, or its error raised in this (the main) process."""
    if isinstance(sample, FailedSample):
        sample.raise_error()
    return sample


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    return [t.contiguous() for t in tensors]


def collate_batch(samples: list) -> dict:
    """A batch for the device: uint8 images (B, 3, H, W) and targets, stacked where sizes agree (else lists).

    Runs in the DataLoader workers, so the main process only copies ready tensors; a sample
    that failed to load travels as ``failed``.
    """
    failed = next((s for s in samples if isinstance(s, FailedSample)), None)
    if failed is not None:
        return {"failed": failed, "names": []}
    batch = {
        "names": [s["name"] for s in samples],
        "images": _stack([torch.from_numpy(np.ascontiguousarray(s["image"])).permute(2, 0, 1) for s in samples]),
    }
    if "label" in samples[0]:
        batch["labels"] = _stack([s["label"] for s in samples])
    elif "panoptic" in samples[0]:
        batch["panoptic"] = _stack([s["panoptic"] for s in samples])
        batch["segments"] = [s["segments"] for s in samples]
    return batch
