"""``layerwise_seg`` merges in memory: every input loaded once, any number of settings merged from it.

The result equals what mergekit writes for the same recipe (the same layouts, the same
inputs per tensor in recipe order, and :func:`layerseg_merge.tensor_merge.merge_tensor`),
without planning, executors or files: what ``layerseg sweep`` needs to try dozens of settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

import torch

from layerseg_merge.architectures.layout import IncompatibleModels, ModelLayout, check_compatible, layout_of
from layerseg_merge.checkpoint import load_tensors
from layerseg_merge.schedule import ScheduleSettings, coefficients
from layerseg_merge.tensor_merge import merge_tensor


@dataclass(frozen=True)
class Candidate:
    """One point of a sweep: which input is the anchor, and the schedule."""

    anchor: int
    settings: ScheduleSettings
    buffers: str = "pooled"


class LoadedInputs:
    """The models of a recipe (in recipe order) with their weights, loaded into memory once."""

    def __init__(self, model_dirs: Sequence[str], weights: Sequence[float] | None = None):
        self.dirs = list(model_dirs)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.dirs)
        self.layouts: list[ModelLayout] = [layout_of(d) for d in self.dirs]
        self.tensors = [load_tensors(d) for d in self.dirs]

    def check(self, anchor: int) -> None:
        for index, layout in enumerate(self.layouts):
            if index != anchor:
                check_compatible(self.layouts[anchor], layout)

    def merge(self, candidate: Candidate) -> dict[str, torch.Tensor]:
        """Every tensor of the anchor's checkpoint, merged (file names, stored dtypes)."""
        anchor = self.layouts[candidate.anchor]
        settings = candidate.settings
        out: dict[str, torch.Tensor] = {}
        for name, info in anchor.tensors.items():
            value = self.tensors[candidate.anchor][name]
            if not value.is_floating_point():
                out[name] = value  # integers: the anchor's
                continue
            host_only = info.role == "backbone" and anchor.family.is_host_specific(info.canonical)
            members: list[tuple[int, str]] = []
            for index, layout in enumerate(self.layouts):
                twin = info if index == candidate.anchor else layout.counterpart(info)
                if twin is None or (host_only and layout.architecture != anchor.architecture):
                    continue
                tensor = self.tensors[index][twin.name]
                if tensor.shape != value.shape:
                    if info.role == "head" and settings.heads == "anchor":
                        continue  # another head shape: left out, as in the mergekit kernel
                    raise IncompatibleModels(f"shape mismatch for tensor {name!r}: {list(value.shape)} in the anchor "
                                             f"vs {list(tensor.shape)} in {self.dirs[index]}")
                members.append((index, twin.name))
            position = next(i for i, (index, _) in enumerate(members) if index == candidate.anchor)
            c = coefficients([self.weights[index] for index, _ in members], position, info.role, info.depth,
                             settings)
            common = reduce(torch.promote_types, (self.tensors[i][n].dtype for i, n in members))
            values = [self.tensors[i][n].to(common) for i, n in members]
            means = None
            if candidate.buffers == "pooled" and name.endswith("running_var"):
                means = [self.tensors[i][n[: -len("running_var")] + "running_mean"] for i, n in members]
            out[name] = merge_tensor(values, c, position, name, candidate.buffers, means).to(value.dtype)
        return out
