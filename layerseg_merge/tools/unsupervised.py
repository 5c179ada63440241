"""Ranking merges without labels: prediction entropy and agreement with the inputs' ensemble (a heuristic).

On unlabelled target images, a candidate merge is scored by
* its mean prediction entropy (per pixel, normalised by log K: 0 = certain, 1 = uniform), and
* its agreement with the ensemble of the input models (the argmax of their mean softmax):
  the fraction of pixels where the candidate's argmax is the ensemble's;
and ranked by ``agreement - entropy``. Neither needs a label, and neither is a measure of
accuracy: confident models can be confidently wrong, and the ensemble can be wrong too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch


def _batches(segmenter, data: str, split: str, batch_size: int, workers: int, limit: int | None) -> Iterator[dict]:
    from layerseg_merge.eval.datasets import open_dataset
    from layerseg_merge.eval.evaluate import _first, device_batches

    dataset = open_dataset(data, split, "images")
    if limit is not None:
        dataset = _first(dataset, limit)
    yield from device_batches(dataset, segmenter.device, batch_size, workers, ("images",) if segmenter.fast else ())


def _probabilities(segmenter, images) -> torch.Tensor:
    sizes = [tuple(image.shape[-2:]) for image in images]
    logits = segmenter.logits(images, sizes)[:, : len(segmenter.id2label)]
    return logits.float().softmax(1)


def ensemble_maps(segmenters: Sequence, data: str, split: str = "val", batch_size: int = 8, workers: int = 2,
                  limit: int | None = None) -> list[torch.Tensor]:
    """Per image, the argmax of the models' mean softmax (uint8 maps on the CPU, in dataset order)."""
    classes = {len(s.id2label) for s in segmenters}
    if len(classes) != 1:
        raise ValueError("--unsupervised needs models with one label set; these have different numbers of classes")
    maps: list[torch.Tensor] = []
    for batch in _batches(segmenters[0], data, split, batch_size, workers, limit):
        total = sum(_probabilities(s, batch["images"]) for s in segmenters)
        maps.extend(total.argmax(1).to(torch.uint8).cpu())
    return maps


def label_free_score(segmenter, data: str, ensemble: Sequence[torch.Tensor], split: str = "val",
                     batch_size: int = 8, workers: int = 2, limit: int | None = None) -> dict:
    """``entropy``, ``agreement`` and ``score`` (= agreement - entropy) of one model over the images."""
    entropy = agreement = pixels = 0.0
    index = 0
    for batch in _batches(segmenter, data, split, batch_size, workers, limit):
        probabilities = _probabilities(segmenter, batch["images"])
        classes = probabilities.shape[1]
        plogp = probabilities * probabilities.clamp_min(1e-12).log()
        entropy += float(-plogp.sum(1).sum()) / math.log(classes)
        prediction = probabilities.argmax(1).cpu()
        for item in prediction:
            agreement += float((item == ensemble[index].long()).sum())
            index += 1
        pixels += prediction.numel()
    entropy, agreement = entropy / pixels, agreement / pixels
    return {"entropy": entropy, "agreement": agreement, "score": agreement - entropy}
