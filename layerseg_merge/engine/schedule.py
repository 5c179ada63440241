"""Per-input merge coefficients of the layer-wise anchor schedule (DESIGN.md §3).

Pure math: no mergekit, no files, no tensors. A tensor is described by its role
(``"backbone"`` or ``"head"``) and, for backbone tensors, its depth in [0, 1]; the
settings are :class:`layerseg_merge.engine.settings.ScheduleSettings`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from layerseg_merge.engine.settings import Role, ScheduleSettings, Shape, check_weight, check_weights


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
    if len(weights) == 1:  # the tensor is one input's: copied, whatever its weight
        check_weight(weights[0])
        return [1.0]
    check_weights(weights)
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
