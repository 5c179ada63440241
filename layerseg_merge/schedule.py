"""Per-input merge coefficients of the layer-wise anchor schedule (DESIGN.md §3).

Pure math: no mergekit, no files, no tensors. A tensor is described by its role
(``"backbone"`` or ``"head"``) and, for backbone tensors, its depth in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

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
    """The recipe parameters that shape the anchor's share along depth."""

    uniform_until: float = 0.5
    anchor_max: float = 1.0
    schedule: Shape = "linear"
    heads: HeadPolicy = "anchor"

    def __post_init__(self) -> None:
        check_unit_interval("uniform_until", self.uniform_until)
        check_unit_interval("anchor_max", self.anchor_max)
        check_choice("schedule", self.schedule, SHAPES)
        check_choice("heads", self.heads, HEAD_POLICIES)


def shape_value(shape: Shape, r: float) -> float:
    """The ramp from 0 (at ``uniform_until``) to 1 (at depth 1)."""
    if shape == "linear":
        return r
    if shape == "cosine":
        return (1.0 - math.cos(math.pi * r)) / 2.0
    return 1.0  # step


def anchor_share(
    depth: float, anchor_uniform_share: float, settings: ScheduleSettings
) -> float:
    """alpha(d): the anchor's coefficient for a backbone tensor at ``depth``."""
    if depth <= settings.uniform_until:
        return anchor_uniform_share
    r = (depth - settings.uniform_until) / (1.0 - settings.uniform_until)
    ramp = shape_value(settings.schedule, r)
    return anchor_uniform_share + (settings.anchor_max - anchor_uniform_share) * ramp


def coefficients(
    weights: Sequence[float],
    anchor_index: int,
    role: Role,
    depth: float | None,
    settings: ScheduleSettings,
) -> list[float]:
    """Coefficients c_i (summing to 1) for one tensor, in the order of ``weights``.

    ``weights`` are the inputs' ``weight`` values for the inputs that hold the
    tensor; ``anchor_index`` points at the anchor among them. ``depth`` is
    required for backbone tensors and ignored for heads.
    """
    check_weights(weights)
    if len(weights) == 1:
        return [1.0]
    if not math.isfinite(sum(weights)):  # finite weights whose sum overflows: only their ratios matter
        largest = max(weights)
        weights = [w / largest for w in weights]
    total = float(sum(weights))
    others = total - weights[anchor_index]
    if others == 0.0:
        return [1.0 if i == anchor_index else 0.0 for i in range(len(weights))]
    uniform = weights[anchor_index] / total
    if role == "head":
        if settings.heads == "anchor":
            alpha = 1.0
        elif settings.heads == "uniform":
            alpha = uniform
        else:
            alpha = anchor_share(1.0, uniform, settings)
    else:
        if depth is None or not 0.0 <= depth <= 1.0:
            raise ValueError(f"layerwise_seg: backbone depth must lie in [0, 1]; got {depth}")
        alpha = anchor_share(depth, uniform, settings)
    return [
        alpha if i == anchor_index else (1.0 - alpha) * w / others
        for i, w in enumerate(weights)
    ]
