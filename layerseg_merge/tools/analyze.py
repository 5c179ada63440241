"""How far apart are the models, layer by layer, and do they sit in one basin?

For every flattened backbone layer (the architecture definitions' layers; depth 0 = stem,
1 = last block) and for the heads, each model's weights are compared with the anchor's and
with the models' mean: relative L2 distance ||w - r|| / ||r|| and cosine similarity, over
all float weights of the layer (BatchNorm statistics and integers left out). Given the models'
shared initialisation (``base``), also their **task vectors** w - base: each one's cosine with
the anchor's and its size relative to the base (Model Stock's view: fine-tunes whose task
vectors are near-orthogonal average toward the base). Tensors are read one at a time from the
safetensors files, so models larger than memory work.

:func:`interpolate` measures a metric along the straight line from the anchor to each other
model (the standard check of whether two checkpoints sit in one basin: a barrier in the middle
says they do not).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from layerseg_merge.engine.arithmetic import is_batchnorm_statistic


class _Sums:
    """Running dot products of one model against a reference, over the tensors of one layer."""

    def __init__(self):
        self.dot = self.own = self.reference = self.difference = self.base = 0.0
        self.parameters = 0

    def add(self, tensor: torch.Tensor, reference: torch.Tensor) -> None:
        tensor, reference = tensor.double().flatten(), reference.double().flatten()
        self.dot += float(tensor @ reference)
        self.own += float(tensor @ tensor)
        self.reference += float(reference @ reference)
        self.difference += float((tensor - reference).square().sum())
        self.parameters += tensor.numel()

    def report(self) -> dict:
        norm = math.sqrt(self.reference)
        denominator = math.sqrt(self.own) * norm
        return {"relative_l2": math.sqrt(self.difference) / norm if norm else None,
                "cosine": self.dot / denominator if denominator else None}

    def task_report(self) -> dict:
        """Of a task vector (``add(w - base, anchor - base)``): its cosine with the anchor's and its norm relative
        to the base's (``base``: the squared norm of the base's weights)."""
        denominator = math.sqrt(self.own) * math.sqrt(self.reference)
        return {"cosine_to_anchor": self.dot / denominator if denominator else None,
                "relative_norm": math.sqrt(self.own / self.base) if self.base else None}


def analyze(model_dirs: Sequence[str], anchor: int = 0, device: str = "cpu", progress: bool = True,
            base: str | None = None) -> dict:
    """Per layer and role: every model against the anchor and against the mean, and with ``base`` (their shared
    initialisation) their task vectors against the anchor's (see the module docstring)."""
    from safetensors import safe_open
    from tqdm import tqdm

    from layerseg_merge.architectures.layout import check_compatible, layout_of
    from layerseg_merge.eval.inference import pick_device
    from layerseg_merge.io.checkpoint import weight_files
    from layerseg_merge.io.hub import resolve_model_path

    dirs = [resolve_model_path(d) for d in model_dirs]
    layouts = [layout_of(d) for d in dirs]
    anchor_layout = layouts[anchor]
    for index, layout in enumerate(layouts):
        if index != anchor:
            check_compatible(anchor_layout, layout)
    where = pick_device(device)
    files = []
    for d in dirs:
        shards = {}
        for path in weight_files(d):
            handle = safe_open(str(path), framework="pt", device="cpu")
            shards.update({name: handle for name in handle.keys()})
        files.append(shards)
    to_anchor: dict = defaultdict(lambda: defaultdict(_Sums))
    to_mean: dict = defaultdict(lambda: defaultdict(_Sums))
    task: dict = defaultdict(lambda: defaultdict(_Sums))  # task vectors against the anchor's, given a base
    base_files, base_layout = None, None
    if base is not None:
        base_dir = resolve_model_path(base)
        base_layout = layout_of(base_dir)
        check_compatible(layouts[anchor], base_layout)
        base_files = {}
        for path in weight_files(base_dir):
            handle = safe_open(str(path), framework="pt", device="cpu")
            base_files.update({name: handle for name in handle.keys()})
    depth_of: dict = {}
    tensors = [t for t in anchor_layout.tensors.values()
               if t.dtype.is_floating_point and not is_batchnorm_statistic(t.name)]
    for info in tqdm(tensors, desc="analyze", unit="tensor", disable=not progress):
        members = []
        for index, layout in enumerate(layouts):
            twin = info if index == anchor else layout.counterpart(info)
            if twin is not None and twin.shape == info.shape:
                members.append((index, files[index][twin.name].get_tensor(twin.name).to(where)))
        if len(members) < 2:
            continue
        key = ("backbone", info.layer) if info.role == "backbone" else ("head", None)
        depth_of[key] = info.depth
        reference = next(t for index, t in members if index == anchor)
        mean = torch.stack([t.double() for _, t in members]).mean(0)
        for index, tensor in members:
            to_anchor[key][index].add(tensor, reference)
            to_mean[key][index].add(tensor, mean)
        origin = base_layout.counterpart(info) if base_layout is not None else None
        if origin is not None and origin.shape == info.shape:
            start = base_files[origin.name].get_tensor(origin.name).to(where).double()
            anchor_vector = reference.double() - start
            for index, tensor in members:
                task[key][index].add(tensor.double() - start, anchor_vector)
                task[key][index].base += float(start.flatten() @ start.flatten())
    names = [str(d) for d in model_dirs]
    layers = []
    for key in sorted(to_anchor, key=lambda k: (k[0] == "head", k[1] or 0)):
        role, layer = key
        entry = {
            "role": role, "layer": layer, "depth": depth_of[key],
            "parameters": next(iter(to_anchor[key].values())).parameters,
            "to_anchor": {names[i]: sums.report() for i, sums in sorted(to_anchor[key].items()) if i != anchor},
            "to_mean": {names[i]: sums.report() for i, sums in sorted(to_mean[key].items())},
        }
        if key in task:
            entry["task_vectors"] = {names[i]: sums.task_report() for i, sums in sorted(task[key].items())}
        layers.append(entry)
    return {"anchor": names[anchor], "models": names, "base": str(base) if base is not None else None,
            "layers": layers}


def plot(report: dict, path: str | Path) -> None:
    """Relative L2 distance to the anchor and to the mean along depth (heads drawn at the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=100, sharey=False)
    backbone = [layer for layer in report["layers"] if layer["role"] == "backbone"]
    heads = [layer for layer in report["layers"] if layer["role"] == "head"]
    for axis, key, title in ((axes[0], "to_anchor", f"to the anchor ({Path(report['anchor']).name})"),
                             (axes[1], "to_mean", "to the models' mean")):
        for index, model in enumerate(report["models"]):
            points = [(layer["depth"], layer[key][model]["relative_l2"]) for layer in backbone
                      if model in layer[key] and layer[key][model]["relative_l2"] is not None]
            if not points:
                continue
            label = (Path(model).name or model) + (" (anchor)" if model == report["anchor"] else "")
            axis.plot(*zip(*points), marker=".", color=f"C{index}", label=label)
            for head in heads:
                if model in head[key] and head[key][model]["relative_l2"] is not None:
                    axis.scatter([1.08], [head[key][model]["relative_l2"]], marker="s", color=f"C{index}")
        axis.set_title(f"relative L2 distance {title}", fontsize=9)
        axis.set_xlabel("backbone depth (0 = stem, 1 = last block); squares: heads", fontsize=8)
        axis.grid(alpha=0.3)
    # One legend for both panels: the anchor has a line only in the right one (its distance to the mean).
    labelled = {label: handle for axis in axes for handle, label in zip(*axis.get_legend_handles_labels())}
    labelled = dict(sorted(labelled.items(), key=lambda item: not item[0].endswith(" (anchor)")))
    figure.legend(labelled.values(), labelled.keys(), loc="lower center", ncol=min(len(labelled), 6), fontsize=8,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path)
    plt.close(figure)


def write_report(report: dict, path: str | Path) -> None:
    from layerseg_merge.io.output import write_file_atomically

    write_file_atomically(path, json.dumps(report, indent=2) + "\n")
