"""How far apart are the models, layer by layer? Relative L2 distance and cosine similarity along depth.

For every flattened backbone layer (the architecture definitions' layers; depth 0 = stem,
1 = last block) and for the heads, each model's weights are compared with the anchor's and
with the models' mean: relative L2 distance ||w - r|| / ||r|| and cosine similarity, over
all float weights of the layer (BatchNorm statistics and integers left out). Tensors are
read one at a time from the safetensors files, so models larger than memory work.
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
        self.dot = self.own = self.reference = self.difference = 0.0
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


def analyze(model_dirs: Sequence[str], anchor: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    """Per layer and role: every model against the anchor and against the mean (see the module docstring)."""
    from safetensors import safe_open
    from tqdm import tqdm

    from layerseg_merge.architectures.layout import check_compatible, layout_of
    from layerseg_merge.eval.inference import pick_device
    from layerseg_merge.io.checkpoint import weight_files
    from layerseg_merge.io.hub import resolve_model_path

    dirs = [resolve_model_path(d) for d in model_dirs]
    layouts = [layout_of(d) for d in dirs]
    base = layouts[anchor]
    for index, layout in enumerate(layouts):
        if index != anchor:
            check_compatible(base, layout)
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
    depth_of: dict = {}
    tensors = [t for t in base.tensors.values() if t.dtype.is_floating_point and not is_batchnorm_statistic(t.name)]
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
    names = [str(d) for d in model_dirs]
    layers = []
    for key in sorted(to_anchor, key=lambda k: (k[0] == "head", k[1] or 0)):
        role, layer = key
        layers.append({
            "role": role, "layer": layer, "depth": depth_of[key],
            "parameters": next(iter(to_anchor[key].values())).parameters,
            "to_anchor": {names[i]: sums.report() for i, sums in sorted(to_anchor[key].items()) if i != anchor},
            "to_mean": {names[i]: sums.report() for i, sums in sorted(to_mean[key].items())},
        })
    return {"anchor": names[anchor], "models": names, "layers": layers}


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
