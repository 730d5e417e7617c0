"""Merging per-rank statistics and updating running statistics.

Written with plain torch ops on (W, C) and (C,) tensors, so the same code
serves the CPU kernel, the NPU fallback and the module's cumulative-average
path. The merge is Chan's parallel formula on (count, mean, M2): unlike
merging sums and sums of squares it loses nothing when |mean| >> std.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor


def merge_rank_stats(mean: Tensor, var: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Merge rows of per-rank (mean, biased var), shapes (W, C), weighted by
    ``counts`` (W,). Returns global (mean, biased var, total count), the last
    a 0-dim tensor. Ranks with count 0 contribute nothing; when every count is
    0 (every rank's batch empty) the result is mean 0, var 0, total 0, the
    statistics of no data (no host read decides it)."""
    n = counts.to(mean.dtype).reshape(-1, 1)
    total = n.sum()
    # Normalised weights keep products small; an empty rank gets weight 0.
    # Counts are whole numbers, so clamping the divisor at 1 changes nothing
    # but the all-empty case, where it gives weights 0 instead of 0/0.
    w = n / total.clamp_min(1)
    g_mean = (w * mean).sum(0)
    # An empty rank's row may hold anything finite; zero its weight explicitly
    # so that inf/nan there cannot leak (0 * inf = nan).
    spread = torch.where(n > 0, var + (mean - g_mean) ** 2, torch.zeros_like(var))
    g_var = (w * spread).sum(0)
    return g_mean, g_var, total


def invstd_to_var(invstd: Tensor, eps: float) -> Tensor:
    """Biased variance from invstd = 1/sqrt(var + eps), clamped at 0 against rounding."""
    return (invstd.pow(-2) - eps).clamp_min(0)


def update_running_stats(
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    mean: Tensor,
    var: Tensor,
    total: Tensor,
    momentum: Union[float, Tensor],
) -> None:
    """running = (1 - momentum) * running + momentum * batch, in place.

    running_var receives the unbiased variance var * N / (N - 1). ``momentum``
    may be a 0-dim tensor (the cumulative average 1/num_batches_tracked), so
    no value is read back to the host. A step with no data (``total`` 0:
    every rank's batch empty) leaves both unchanged, as local BatchNorm does
    for an empty batch: the weight becomes 0 on the device, no host read."""
    if running_mean is None and running_var is None:
        return
    like = running_mean if running_mean is not None else running_var
    if isinstance(total, Tensor):
        # The weight in the running stats' dtype: a float64 buffer keeps a float64 momentum.
        weight = _weight(momentum, like)
        if not isinstance(weight, Tensor):
            weight = torch.full((), weight, dtype=like.dtype, device=like.device)
        momentum = torch.where(total.to(like.device) > 0, weight, 0)
    if running_mean is not None:
        running_mean.lerp_(mean.to(running_mean.dtype), _weight(momentum, running_mean))
    if running_var is not None:
        unbiased = var * total / (total - 1)
        running_var.lerp_(unbiased.to(running_var.dtype), _weight(momentum, running_var))


def _weight(momentum: Union[float, Tensor], like: Tensor):
    if isinstance(momentum, Tensor):
        return momentum.to(device=like.device, dtype=like.dtype)
    return float(momentum)


def merge_shifted_sums(count: Tensor, shifted_sum: Tensor, shifted_sq_sum: Tensor, shift: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Global (mean, biased var, total count) from sums over all ranks of
    n, n·(m − s) and M2 + n·(m − s)², where s is a per-channel shift every rank
    shares. With s near the true mean the terms stay O(var): no cancellation.
    With no data (total 0) the result is mean 0, var 0, as :func:`merge_rank_stats`."""
    total = count.reshape(())
    divisor = total.clamp_min(1)  # whole counts: only the all-empty case changes (0/0 otherwise)
    d = shifted_sum / divisor
    var = (shifted_sq_sum / divisor - d * d).clamp_min(0)
    return torch.where(total > 0, shift + d, 0.0), var, total


def shifted_sums(mean: Tensor, var: Tensor, count: Tensor, shift: Tensor) -> Tensor:
    """This rank's [n | n·(m − s) | M2 + n·(m − s)²], the summands of :func:`merge_shifted_sums`."""
    n = count.reshape(1)
    d = mean - shift
    return torch.cat([n, n * d, n * (var + d * d)])
