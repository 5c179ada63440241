"""A metric along the straight line from the anchor to each other model: do two checkpoints sit in one basin?

theta(lambda) = (1 - lambda) theta_anchor + lambda theta_other, for lambda from 0 (the anchor) to 1 (the other
model), merged by the engine (``layerwise_seg`` with ``uniform_until: 1`` and weights 1 - lambda, lambda: the
plain weighted mean, BatchNorm statistics pooled, integers the anchor's; heads interpolated where they line up,
else the anchor's). Each point is scored on labelled data (the task's headline metric) or, on unlabelled
images, by its mIoU against the pseudo-labels of the models' ensemble (:mod:`layerseg_merge.tools.unsupervised`).
A dip in the middle below both ends is a loss barrier: averaging those two models is not expected to help.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from layerseg_merge.engine.in_memory import Candidate, LoadedInputs
from layerseg_merge.engine.settings import ScheduleSettings
from layerseg_merge.eval.options import DataOptions, InferenceOptions


def _heads_line_up(inputs: LoadedInputs) -> bool:
    first, *others = inputs.layouts
    shapes = {info.name: info.shape for info in first.heads}
    return all(layout.architecture == first.architecture and layout.labels == first.labels
               and {info.name: info.shape for info in layout.heads} == shapes for layout in others)


def interpolate(model_dirs: Sequence[str], anchor: int, on: DataOptions, task: str = "semantic",
                infer: InferenceOptions = InferenceOptions(), steps: int = 5, confidence: float = 0.5,
                progress: bool = False) -> dict:
    """The metric at ``steps`` evenly spaced points of the line from ``model_dirs[anchor]`` to each other model."""
    from layerseg_merge.eval.evaluate import evaluate, join_ranks
    from layerseg_merge.eval.report_metrics import metrics_of

    if steps < 2:
        raise ValueError(f"--steps {steps}: give at least 2 points (the two ends)")
    labelled = not on.data.startswith("images:")
    chosen, _, _ = join_ranks(infer.device)
    infer = replace(infer, device=str(chosen))
    points = [i / (steps - 1) for i in range(steps)]
    name = next(metric for metric in metrics_of(task) if metric.headline) if labelled else None
    pseudo = None if labelled else _PseudoLabels(model_dirs, on, infer, confidence)
    curves = {}
    for other in range(len(model_dirs)):
        if other == anchor:
            continue
        inputs = LoadedInputs([model_dirs[anchor], model_dirs[other]])
        inputs.check(0)
        heads = "uniform" if _heads_line_up(inputs) else "anchor"
        settings = ScheduleSettings(uniform_until=1.0, heads=heads)
        values = []
        for share in points:
            inputs.weights = [1.0 - share, share]
            tensors = inputs.merge(Candidate(0, settings))  # at 0 the anchor's tensors, at 1 the other's, exactly
            if labelled:
                report = evaluate(model_dirs[anchor], on, task, infer, progress=progress, tensors=tensors)
                values.append(name.value(report))
            else:
                values.append(pseudo.score(model_dirs[anchor], tensors))
        curves[str(model_dirs[other])] = {"values": values, "heads": heads}
    return {"anchor": str(model_dirs[anchor]), "data": on.data, "steps": points,
            "metric": name.name if labelled else f"pseudo-mIoU (ensemble, confidence {confidence:g})",
            "curves": curves}


class _PseudoLabels:
    """The models' ensemble on unlabelled images, once; each interpolated model scored against it."""

    def __init__(self, model_dirs: Sequence[str], on: DataOptions, infer: InferenceOptions, confidence: float):
        from layerseg_merge.eval.evaluate import open_data
        from layerseg_merge.eval.inference import Segmenter
        from layerseg_merge.tools.scoring import CachedBatches
        from layerseg_merge.tools.unsupervised import ensemble_of

        dataset = open_data(on, "images")
        device = Segmenter(model_dirs[0], infer).device
        self.batches = CachedBatches(dataset, infer.batch_size, on.decoders(device.type), device.type == "cuda",
                                     float("inf"), list(range(len(dataset))), len(dataset))
        self.infer = infer
        self.ensemble = ensemble_of([Segmenter(d, infer) for d in model_dirs], self.batches)
        self.pseudo = self.ensemble.pseudo_labels(confidence)

    def score(self, model_dir: str, tensors: dict) -> float | None:
        from layerseg_merge.eval.inference import Segmenter
        from layerseg_merge.tools.unsupervised import pseudo_miou_score

        segmenter = Segmenter(model_dir, self.infer, tensors=tensors)
        return pseudo_miou_score(segmenter, self.batches, self.pseudo, self.ensemble.classes)["score"]


def plot(result: dict, path: str | Path) -> None:
    """The metric along each line (lambda 0: the anchor, 1: the other model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=100)
    for index, (model, curve) in enumerate(result["curves"].items()):
        values = [100 * v if v is not None else None for v in curve["values"]]
        label = Path(model).name + (" (anchor's head)" if curve["heads"] == "anchor" else "")
        axis.plot(result["steps"], values, marker="o", color=f"C{index + 1}", label=label)
    axis.set_xlabel(f"lambda: (1 - lambda) {Path(result['anchor']).name} + lambda other", fontsize=8)
    axis.set_ylabel(result["metric"], fontsize=8)
    axis.set_title("along the line from the anchor to each model", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
