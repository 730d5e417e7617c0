"""Float64 reference formulas for the five ops.

Written directly from the definitions (no shortcuts, no fused kernels) so that
tests and the accuracy tool have an independent truth to compare against.
Every function takes tensors of any float dtype, computes in float64 and
returns float64 tensors. ``C`` is dim 1 of ``input``; the reduction runs over
every other dim.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def _reduce_dims(x: Tensor) -> Tuple[int, ...]:
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """View a (C,) tensor so that it broadcasts against ``x`` of shape (N, C, *)."""
    return v.double().reshape((1, -1) + (1,) * (x.dim() - 2))


def batch_norm_stats(input: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    """(mean, invstd) of each channel; invstd = 1/sqrt(biased var + eps).

    An empty input gives mean 0 and invstd 1/sqrt(eps) (variance 0)."""
    x = input.double()
    c = x.shape[1]
    if x.numel() == 0:
        return torch.zeros(c, dtype=torch.float64), torch.full((c,), eps, dtype=torch.float64).rsqrt()
    dims = _reduce_dims(x)
    mean = x.mean(dim=dims)
    var = ((x - _per_channel(mean, x)) ** 2).mean(dim=dims)
    return mean, (var + eps).rsqrt()


def batch_norm_gather_stats_with_counts(
    mean: Tensor,
    invstd: Tensor,
    counts: Tensor,
    eps: float,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    momentum: float = 0.1,
) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """Merge per-rank statistics (rows of ``mean``/``invstd``, shape (W, C)) with
    per-rank element counts (W,). Returns the global (mean, invstd) and the
    running stats after one update (None where not given), the variance
    entering running_var being the unbiased one: var * N / (N - 1)."""
    mean = mean.double()
    n = counts.double().reshape(-1, 1)
    var = invstd.double() ** -2 - eps
    total = n.sum()
    g_mean = (n * mean).sum(0) / total
    g_var = (n * (var + (mean - g_mean) ** 2)).sum(0) / total
    new_rm = new_rv = None
    if running_mean is not None:
        new_rm = (1 - momentum) * running_mean.double() + momentum * g_mean
    if running_var is not None:
        new_rv = (1 - momentum) * running_var.double() + momentum * g_var * total / (total - 1)
    return g_mean, (g_var + eps).rsqrt(), new_rm, new_rv


def batch_norm_elemt(
    input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, invstd: Tensor
) -> Tensor:
    """y = (x - mean) * invstd * weight + bias, per channel."""
    x = input.double()
    y = (x - _per_channel(mean, x)) * _per_channel(invstd, x)
    if weight is not None:
        y = y * _per_channel(weight, x)
    if bias is not None:
        y = y + _per_channel(bias, x)
    return y


def batch_norm_backward_reduce(
    grad_out: Tensor, input: Tensor, mean: Tensor, invstd: Tensor
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(sum_dy, sum_dy_xmu, grad_weight, grad_bias) of one rank:
    sum_dy = Σ dy, sum_dy_xmu = Σ dy·(x - mean), grad_weight = sum_dy_xmu·invstd,
    grad_bias = sum_dy."""
    x, dy = input.double(), grad_out.double()
    dims = _reduce_dims(x)
    sum_dy = dy.sum(dim=dims)
    sum_dy_xmu = (dy * (x - _per_channel(mean, x))).sum(dim=dims)
    return sum_dy, sum_dy_xmu, sum_dy_xmu * invstd.double(), sum_dy.clone()


def batch_norm_backward_elemt(
    grad_out: Tensor,
    input: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Optional[Tensor],
    sum_dy: Tensor,
    sum_dy_xmu: Tensor,
    count: Tensor,
) -> Tensor:
    """dx = (dy - sum_dy/N - (x - mean)·invstd²·sum_dy_xmu/N) · invstd · weight,
    with N = count.sum() the global element count per channel."""
    x, dy = input.double(), grad_out.double()
    n = count.double().sum()
    m, s = _per_channel(mean, x), _per_channel(invstd, x)
    w = _per_channel(weight, x) if weight is not None else 1.0
    return (dy - _per_channel(sum_dy, x) / n - (x - m) * s * s * _per_channel(sum_dy_xmu, x) / n) * s * w


def batch_norm_elemt_act(input, weight, bias, mean, invstd, residual: Optional[Tensor], relu: bool) -> Tensor:
    """relu(batch_norm_elemt(...) + residual), residual and relu optional."""
    y = batch_norm_elemt(input, weight, bias, mean, invstd)
    if residual is not None:
        y = y + residual.double()
    return y.clamp_min(0) if relu else y


def batch_norm_backward_reduce_relu(grad_out: Tensor, output: Tensor, input: Tensor, mean: Tensor, invstd: Tensor):
    """batch_norm_backward_reduce of grad_sum = grad_out where output > 0
    (or NaN), else 0; then grad_sum."""
    dy = grad_out.double()
    grad_sum = torch.where(output.double() <= 0, torch.zeros_like(dy), dy)
    return (*batch_norm_backward_reduce(grad_sum, input, mean, invstd), grad_sum)
