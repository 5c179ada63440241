"""Ranking merges without labels: prediction entropy and agreement with the inputs' ensemble (a heuristic).

On unlabelled target images, a candidate merge is scored by
* its mean prediction entropy (per pixel, normalised by log K: 0 = certain, 1 = uniform), and
* its agreement with the ensemble of the input models (the argmax of their mean softmax):
  the fraction of pixels where the candidate's argmax is the ensemble's;
and ranked by ``agreement - entropy``. Neither needs a label, and neither is a measure of
accuracy: confident models can be confidently wrong, and the ensemble can be wrong too.

``batches`` are host batches of this rank's images (:class:`layerseg_merge.tools.scoring.CachedBatches`);
under torchrun the per-image sums of every rank are gathered and added in dataset order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _probabilities(segmenter, images) -> torch.Tensor:
    sizes = [tuple(image.shape[-2:]) for image in images]
    logits = segmenter.logits(images, sizes)[:, : len(segmenter.id2label)]
    return logits.float().softmax(1)


def _on_device(segmenter, batches):
    from layerseg_merge.eval.evaluate import on_device

    return on_device(batches, segmenter.device, ("images",) if segmenter.fast else ())


def ensemble_maps(segmenters: Sequence, batches) -> list[torch.Tensor]:
    """Per image, the argmax of the models' mean softmax (uint8 maps on the CPU, in batch order)."""
    classes = {len(s.id2label) for s in segmenters}
    if len(classes) != 1:
        raise ValueError("--unsupervised needs models with one label set; these have different numbers of classes")
    maps: list[torch.Tensor] = []
    for batch in _on_device(segmenters[0], batches):
        total = sum(_probabilities(s, batch["images"]) for s in segmenters)
        maps.extend(total.argmax(1).to(torch.uint8).cpu())
    return maps


def label_free_score(segmenter, batches, ensemble: Sequence[torch.Tensor]) -> dict:
    """``entropy``, ``agreement`` and ``score`` (= agreement - entropy) of one model over the images."""
    from layerseg_merge.eval.evaluate import gather_rows

    rows = []  # per image: normalised entropy summed over its pixels, pixels agreeing with the ensemble, pixels
    for batch in _on_device(segmenter, batches):
        probabilities = _probabilities(segmenter, batch["images"])
        plogp = probabilities * probabilities.clamp_min(1e-12).log()
        entropy = -plogp.sum(1).flatten(1).sum(1, dtype=torch.float64) / math.log(probabilities.shape[1])
        prediction = probabilities.argmax(1).cpu()
        for item, value in zip(prediction, entropy.tolist()):
            agreeing = int((item == ensemble[len(rows)].long()).sum())
            rows.append((value, agreeing, item.numel()))
    table = gather_rows(torch.tensor(rows, dtype=torch.float64).reshape(-1, 3), batches.positions, batches.total,
                        segmenter.device)
    entropy, agreement, pixels = table.sum(0).tolist()
    entropy, agreement = entropy / pixels, agreement / pixels
    return {"entropy": entropy, "agreement": agreement, "score": agreement - entropy}
