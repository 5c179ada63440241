"""``layerwise_seg`` merges in memory: every input loaded once, any number of settings merged from it.

The result equals what mergekit writes for the same recipe (the same layouts, the members and
coefficients of :func:`layerseg_merge.engine.plan.plan_tensor`, inputs in recipe order, and
:func:`layerseg_merge.engine.arithmetic.merge_tensor`),
without planning, executors or files: what ``layerseg sweep`` needs to try dozens of settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from layerseg_merge.architectures.layout import ModelLayout, check_compatible, layout_of
from layerseg_merge.engine.arithmetic import running_mean_name
from layerseg_merge.engine.driver import merge_planned
from layerseg_merge.engine.plan import plan_tensor
from layerseg_merge.engine.settings import DEFAULT_WEIGHT, ScheduleSettings
from layerseg_merge.io.checkpoint import load_tensors


@dataclass(frozen=True)
class Candidate:
    """One point of a sweep: which input is the anchor, and the settings; ``alone``: the anchor as it is, no merge
    (so that "do not merge" can win)."""

    anchor: int
    settings: ScheduleSettings
    alone: bool = False


class LoadedInputs:
    """The models of a recipe (in recipe order) with their weights, loaded into memory once."""

    def __init__(self, model_dirs: Sequence[str], weights: Sequence[float] | None = None):
        self.dirs = list(model_dirs)
        self.weights = list(weights) if weights is not None else [DEFAULT_WEIGHT] * len(self.dirs)
        self.layouts: list[ModelLayout] = [layout_of(d) for d in self.dirs]
        self.tensors = [load_tensors(d) for d in self.dirs]

    def check(self, anchor: int) -> None:
        for index, layout in enumerate(self.layouts):
            if index != anchor:
                check_compatible(self.layouts[anchor], layout)

    def merge(self, candidate: Candidate) -> dict[str, torch.Tensor]:
        """Every tensor of the anchor's checkpoint, merged (file names, stored dtypes); the anchor's own tensors for
        a candidate ``alone``."""
        if candidate.alone:
            return dict(self.tensors[candidate.anchor])
        out: dict[str, torch.Tensor] = {}
        for name in self.layouts[candidate.anchor].tensors:
            plan = plan_tensor(self.layouts, candidate.anchor, name, self.weights, candidate.settings)
            value = self.tensors[candidate.anchor][name]
            if plan.is_copy:
                out[name] = value
                continue
            values = [self.tensors[i][n] for i, n in zip(plan.members, plan.names)]
            means = None
            if candidate.settings.buffers == "pooled" and name.endswith("running_var"):
                means = [self.tensors[i][running_mean_name(n)] for i, n in zip(plan.members, plan.names)]
            out[name] = merge_planned(plan, values, means, candidate.settings.buffers,
                                      [self.dirs[i] for i in plan.members], value.dtype, "the anchor's stored dtype")
        return out
