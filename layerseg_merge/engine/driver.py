"""One output tensor from its plan and its members' values: the step the mergekit kernel and the in-memory
merges of ``layerseg sweep`` share, so that both give the same bits (the same promotion, the same
:func:`layerseg_merge.engine.arithmetic.merge_tensor`, the same checked cast)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import torch

from layerseg_merge.engine.arithmetic import cast_checked, merge_tensor
from layerseg_merge.engine.plan import TensorPlan


def merge_planned(plan: TensorPlan, values: Sequence[torch.Tensor], means: Sequence[torch.Tensor] | None,
                  buffers: str, labels: Sequence[str], dtype: torch.dtype, why: str) -> torch.Tensor:
    """The output tensor of ``plan`` from its members' ``values`` (plan order; ``means``: their BatchNorm running
    means, for ``buffers: pooled`` variances), in ``dtype`` (``why``: whose dtype, for an overflow's message)."""
    common = reduce(torch.promote_types, (value.dtype for value in values))
    values = [value.to(common) for value in values]
    merged = merge_tensor(values, plan.coefficients, plan.anchor_position, plan.info.name, buffers, means, labels)
    return cast_checked(merged, dtype, plan.info.name, why)
