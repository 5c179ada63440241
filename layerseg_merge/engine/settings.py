"""The settings of a ``layerwise_seg`` merge: their one set of defaults, their checks, an input's weight.

Every path that reads the method's parameters (the mergekit kernel, the in-memory merges of the sweep,
the recipe checks, the model card) takes its defaults and checks from here. No mergekit, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal, get_args

METHOD_NAME = "layerwise_seg"
DEFAULT_WEIGHT = 1.0

Shape = Literal["linear", "cosine", "step"]
HeadPolicy = Literal["anchor", "schedule", "uniform"]
BufferPolicy = Literal["pooled", "anchor", "mean"]
Role = Literal["backbone", "head"]

SHAPES: tuple[str, ...] = get_args(Shape)
HEAD_POLICIES: tuple[str, ...] = get_args(HeadPolicy)
BUFFER_POLICIES: tuple[str, ...] = get_args(BufferPolicy)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a message naming ``name``."""
    if value not in choices:
        raise ValueError(
            f"layerwise_seg: unknown {name} {value!r}; use one of: {', '.join(choices)}"
        )
    return value


def check_unit_interval(name: str, value: float) -> float:
    """Return ``value`` if it lies in [0, 1]; otherwise raise a message naming ``name``."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"layerwise_seg: {name} must lie in [0, 1]; got {value}")
    return value


def check_weight(value: float) -> float:
    """Return ``value`` if it is a usable input weight (finite, >= 0); otherwise raise naming it."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"layerwise_seg: weight must be a finite number >= 0; got {value}")
    return value


def check_weights(weights: Sequence[float]) -> None:
    """Every weight usable and at least one positive."""
    for weight in weights:
        check_weight(weight)
    if weights and not any(weights):
        raise ValueError("layerwise_seg: every model has weight 0 (the weights sum to 0); give at least one model "
                         "a positive weight")


def check_anchor_and_count(anchor: object | None, models: Sequence[object], where: str = "") -> None:
    """An anchor, listed among the merged models, and at least two of them."""
    if anchor is None:
        raise ValueError(f"layerwise_seg needs an anchor{where}: add `base_model:` naming one of the models")
    if anchor not in models:
        raise ValueError(f"the anchor {anchor} (base_model) is not among the models{where}; list it under "
                         "`models:` too, with its weight")
    if len(models) < 2:
        raise ValueError(f"layerwise_seg merges at least 2 models{where}; got {len(models)}. List the models to "
                         "merge under `models:`")


@dataclass(frozen=True)
class ScheduleSettings:
    """The recipe parameters shared by a merge's tensors (its ``parameters:``): the anchor's share along depth,
    the heads' and the BatchNorm statistics' policies. The field defaults are the method's defaults."""

    uniform_until: float = 0.5
    anchor_max: float = 1.0
    schedule: Shape = "linear"
    heads: HeadPolicy = "anchor"
    buffers: BufferPolicy = "pooled"

    def __post_init__(self) -> None:
        check_unit_interval("uniform_until", self.uniform_until)
        check_unit_interval("anchor_max", self.anchor_max)
        check_choice("schedule", self.schedule, SHAPES)
        check_choice("heads", self.heads, HEAD_POLICIES)
        check_choice("buffers", self.buffers, BUFFER_POLICIES)

    @classmethod
    def from_parameters(cls, parameters: Mapping | None) -> ScheduleSettings:
        """The settings a mapping of plain parameter values gives (missing ones: the defaults)."""
        given = {f.name: parameters[f.name] for f in fields(cls) if parameters and f.name in parameters}
        for name in ("uniform_until", "anchor_max"):
            if name in given and not isinstance(given[name], bool):
                given[name] = float(given[name])
        return cls(**given)


DEFAULTS = ScheduleSettings()
SHARED_PARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(ScheduleSettings))
PER_INPUT_PARAMETERS: tuple[str, ...] = ("weight",)


def input_weight(own: Mapping | None, shared: Mapping | None = None):
    """An input's ``weight``: its own, else the recipe's (``parameters:``), else :data:`DEFAULT_WEIGHT` (as given:
    a value to check, or a gradient/filter list)."""
    for scope in (own, shared):
        if scope and "weight" in scope:
            return scope["weight"]
    return DEFAULT_WEIGHT


