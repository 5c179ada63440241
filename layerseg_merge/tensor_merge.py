"""The arithmetic of one ``layerwise_seg`` output tensor (DESIGN.md §3), shared by the mergekit kernel and the
in-memory merges of ``layerseg sweep``: the same operations in the same order, so both give the same bits."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class NonFiniteOutput(ValueError):
    """A merged tensor with NaN or infinite values although its inputs are finite (an overflow)."""


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
                 means: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """One merged float tensor, in the accumulation dtype (the caller casts it).

    ``buffers`` is the policy for BatchNorm statistics: ``pooled`` (a running variance becomes
    the variance of the mixture, which needs the inputs' running ``means``), ``anchor`` or ``mean``.
    """
    if is_batchnorm_statistic(name) and buffers == "anchor":
        return values[anchor]
    dtype = accumulation_dtype(values[anchor].dtype)
    merged = weighted_sum(values, c, dtype)
    if buffers == "pooled" and name.endswith("running_var"):
        # Var of the mixture: sum c_i (var_i + (mu_i - mu)^2), mu = sum c_i mu_i.
        means = [m.to(values[anchor].device, dtype) for m in means]
        pooled_mean = weighted_sum(means, c, dtype)
        merged += weighted_sum([(m - pooled_mean) ** 2 for m in means], c, dtype)
    if not torch.isfinite(merged).all():
        what = "the pooled BatchNorm variance" if name.endswith("running_var") else "the weighted sum"
        raise NonFiniteOutput(f"merged tensor {name!r} is not finite: {what} overflows {dtype} although every "
                              "input is finite; use smaller weights, or buffers: anchor for BatchNorm statistics")
    return merged


def cast_checked(merged: torch.Tensor, dtype: torch.dtype, name: str, why: str) -> torch.Tensor:
    """``merged`` in ``dtype`` (``why`` says whose dtype it is); an error where the cast overflows."""
    result = merged.to(dtype)
    if result is not merged and dtype.is_floating_point and not torch.isfinite(result).all():
        raise NonFiniteOutput(f"merged tensor {name!r} overflows {dtype} ({why}) although it is finite in "
                              f"{merged.dtype}; merge into a wider dtype (recipe `dtype: float32` / `out_dtype: "
                              "float32`)")
    return result
