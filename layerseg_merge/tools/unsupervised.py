"""Ranking merges without target labels: label-free selectors for ``layerseg sweep --unsupervised``.

* ``pseudo-miou`` (default): pseudo-labels from the ensemble of the input models (the argmax of their mean
  softmax, each input as stored) where the ensemble is confident (its mean probability at least
  ``confidence``; other pixels ignored), and each candidate scored by its mIoU against them: a
  class-balanced agreement with the ensemble. Validation against the ensemble of the candidates' or the
  experts' predictions is what a NeurIPS 2024 study of UDA validators found least likely to pick a bad
  model; the confidence threshold keeps the ensemble's guesses out.
* ``agreement-entropy``: the earlier heuristic, agreement with the ensemble's argmax minus the mean
  normalised prediction entropy (kept for comparison).

Neither is an accuracy: the ensemble can be wrong, and a candidate that copies one input scores well where
that input dominates the ensemble. ``batches`` are host batches of this rank's images
(:class:`layerseg_merge.tools.scoring.CachedBatches`); under torchrun the per-image figures of every rank
are gathered and added in dataset order, so every rank returns the same scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE = 255
SELECTORS = ("pseudo-miou", "agreement-entropy")


def _probabilities(segmenter, images) -> torch.Tensor:
    sizes = [tuple(image.shape[-2:]) for image in images]
    logits = segmenter.logits(images, sizes)[:, : len(segmenter.id2label)]
    return logits.float().softmax(1)


def _on_device(segmenter, batches):
    from layerseg_merge.eval.evaluate import on_device

    return on_device(batches, segmenter.device, ("images",) if segmenter.fast else ())


@dataclass
class Ensemble:
    """Per image of this rank (batch order): the ensemble's argmax (uint8) and its mean probability there."""

    labels: list[torch.Tensor]
    confidence: list[torch.Tensor]
    classes: int

    def pseudo_labels(self, threshold: float) -> list[torch.Tensor]:
        """The argmax where the ensemble's mean probability is at least ``threshold``, else :data:`IGNORE`."""
        return [torch.where(c >= threshold, label, torch.full_like(label, IGNORE))
                for label, c in zip(self.labels, self.confidence)]


def ensemble_of(segmenters: Sequence, batches) -> Ensemble:
    """The ensemble of ``segmenters`` (the mean of their softmax) over ``batches`` (on the CPU, in batch order)."""
    classes = {len(s.id2label) for s in segmenters}
    if len(classes) != 1:
        raise ValueError("--unsupervised needs models with one label set; these have different numbers of classes")
    labels, confidence = [], []
    for batch in _on_device(segmenters[0], batches):
        mean = sum(_probabilities(s, batch["images"]) for s in segmenters) / len(segmenters)
        top, argmax = mean.max(1)
        labels.extend(argmax.to(torch.uint8).cpu())
        confidence.extend(top.cpu())
    return Ensemble(labels, confidence, classes.pop())


def pseudo_miou_score(segmenter, batches, pseudo: list[torch.Tensor], classes: int) -> dict:
    """``score``: the mIoU of ``segmenter``'s predictions against the ``pseudo`` labels (ignored pixels left out;
    all-reduced over ranks)."""
    from layerseg_merge.eval.metrics import SemanticMetric

    metric = SemanticMetric(classes, IGNORE)
    index = 0
    for batch in _on_device(segmenter, batches):
        prediction = _probabilities(segmenter, batch["images"]).argmax(1).to(torch.uint8).cpu()
        for item in prediction:
            metric.update(item, pseudo[index])
            index += 1
    metric.reduce(segmenter.device)
    return {"score": metric.compute()["mIoU"]}


def labelled_share(pseudo: list[torch.Tensor], batches, device) -> float:
    """The share of all pixels (every rank's) that carry a pseudo-label."""
    from layerseg_merge.eval.evaluate import gather_rows

    rows = torch.tensor([[float((p != IGNORE).sum()), float(p.numel())] for p in pseudo], dtype=torch.float64)
    labelled, pixels = gather_rows(rows.reshape(-1, 2), batches.positions, batches.total, device).sum(0).tolist()
    return labelled / max(pixels, 1.0)


def agreement_entropy_score(segmenter, batches, ensemble: Ensemble) -> dict:
    """``entropy``, ``agreement`` and ``score`` (= agreement - entropy) of one model over the images."""
    from layerseg_merge.eval.evaluate import gather_rows

    rows = []  # per image: normalised entropy summed over its pixels, pixels agreeing with the ensemble, pixels
    for batch in _on_device(segmenter, batches):
        probabilities = _probabilities(segmenter, batch["images"])
        plogp = probabilities * probabilities.clamp_min(1e-12).log()
        entropy = -plogp.sum(1).flatten(1).sum(1, dtype=torch.float64) / math.log(probabilities.shape[1])
        prediction = probabilities.argmax(1).cpu()
        for item, value in zip(prediction, entropy.tolist()):
            agreeing = int((item == ensemble.labels[len(rows)].long()).sum())
            rows.append((value, agreeing, item.numel()))
    table = gather_rows(torch.tensor(rows, dtype=torch.float64).reshape(-1, 3), batches.positions, batches.total,
                        segmenter.device)
    entropy, agreement, pixels = table.sum(0).tolist()
    entropy, agreement = entropy / pixels, agreement / pixels
    return {"entropy": entropy, "agreement": agreement, "score": agreement - entropy}


def label_free_score(selector: str, segmenter, batches, ensemble: Ensemble, confidence: float,
                     pseudo: list[torch.Tensor] | None = None) -> dict:
    """One candidate's row under ``selector`` (``pseudo``: the ensemble's pseudo-labels at ``confidence``, made
    once per sweep)."""
    if selector == "pseudo-miou":
        return pseudo_miou_score(segmenter, batches, pseudo if pseudo is not None else
                                 ensemble.pseudo_labels(confidence), ensemble.classes)
    if selector == "agreement-entropy":
        return agreement_entropy_score(segmenter, batches, ensemble)
    raise ValueError(f"unknown label-free selector {selector!r}; use {' or '.join(SELECTORS)}")
