"""The arithmetic of one ``layerwise_seg`` output tensor (DESIGN.md §3), shared by the mergekit kernel and the
in-memory merges of ``layerseg sweep``: the same operations in the same order, so both give the same bits."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class NonFiniteOutput(ValueError):
    """A merged tensor with NaN or infinite values although its inputs are finite (an overflow)."""


class NonFiniteTensor(ValueError):
    """An input tensor with NaN or infinite values that would reach the merged tensor (``index``: which input)."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def is_finite(tensor: torch.Tensor) -> bool:
    """Every value finite: one min/max reduction (NaN propagates), ~20x cheaper than ``isfinite().all()``."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for every float type but float64, which stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def weighted_sum(tensors: Sequence[torch.Tensor], c: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """sum_i c_i * t_i in ``dtype``, accumulated in place (one output buffer)."""
    result = torch.zeros_like(tensors[0], dtype=dtype)
    for tensor, coefficient in zip(tensors, c):
        if coefficient:
            result.add_(tensor.to(dtype), alpha=coefficient)
    return result


def running_mean_name(variance_name: str) -> str:
    """The running mean beside a BatchNorm running variance."""
    return variance_name[: -len("running_var")] + "running_mean"


def is_batchnorm_statistic(name: str) -> bool:
    return name.endswith(("running_mean", "running_var"))


def merge_tensor(values: Sequence[torch.Tensor], c: Sequence[float], anchor: int, name: str, buffers: str,
                 means: Sequence[torch.Tensor] | None = None, labels: Sequence[str] | None = None) -> torch.Tensor:
    """One merged float tensor, in the accumulation dtype (the caller casts it), checked finite.

    ``buffers`` is the policy for BatchNorm statistics: ``pooled`` (a running variance becomes
    the variance of the mixture, which needs the inputs' running ``means``), ``anchor`` or ``mean``.
    ``labels`` name the inputs in errors. Only the result is scanned; the inputs are looked at only
    when it is not finite, to name the one that brought NaN or infinity in (inputs with coefficient
    0 are not merged, so their values do not matter).
    """
    if is_batchnorm_statistic(name) and buffers == "anchor":
        merged = values[anchor]
        used = [i == anchor for i in range(len(values))]
    else:
        dtype = accumulation_dtype(values[anchor].dtype)
        merged = weighted_sum(values, c, dtype)
        if buffers == "pooled" and name.endswith("running_var"):
            # Var of the mixture: sum c_i (var_i + (mu_i - mu)^2), mu = sum c_i mu_i.
            means = [m.to(values[anchor].device, dtype) for m in means]
            pooled_mean = weighted_sum(means, c, dtype)
            merged += weighted_sum([(m - pooled_mean) ** 2 for m in means], c, dtype)
        used = [bool(ci) for ci in c]
    if not is_finite(merged):
        _explain_non_finite(values, means, used, name, labels or [f"#{i}" for i in range(len(values))], merged.dtype)
    return merged


def _explain_non_finite(values, means, used, name: str, labels: Sequence[str], dtype: torch.dtype) -> None:
    for index, value in enumerate(values):
        if used[index] and not is_finite(value):
            raise NonFiniteTensor(f"tensor {name!r} of model {labels[index]} holds NaN or infinite values; "
                                  "layerwise_seg does not merge them: fix or re-export that model, or leave it out "
                                  "of the recipe", index)
        if used[index] and means is not None and not is_finite(means[index]):
            raise NonFiniteTensor(f"tensor {running_mean_name(name)!r} of model {labels[index]} holds NaN or "
                                  "infinite values; layerwise_seg does not merge them: fix or re-export that model, "
                                  "or leave it out of the recipe", index)
    what = "the pooled BatchNorm variance" if name.endswith("running_var") else "the weighted sum"
    raise NonFiniteOutput(f"merged tensor {name!r} is not finite: {what} overflows {dtype} although every "
                          "input is finite; use smaller weights, or buffers: anchor for BatchNorm statistics")


def cast_checked(merged: torch.Tensor, dtype: torch.dtype, name: str, why: str) -> torch.Tensor:
    """``merged`` in ``dtype`` (``why`` says whose dtype it is); an error where the cast overflows."""
    result = merged.to(dtype)
    if result is not merged and dtype.is_floating_point and not is_finite(result):
        raise NonFiniteOutput(f"merged tensor {name!r} overflows {dtype} ({why}) although it is finite in "
                              f"{merged.dtype}; merge into a wider dtype (recipe `dtype: float32` / `out_dtype: "
                              "float32`)")
    return result
