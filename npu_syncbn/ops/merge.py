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
    a 0-dim tensor. Ranks with count 0 contribute nothing."""
    n = counts.to(mean.dtype).reshape(-1, 1)
    total = n.sum()
    # Normalised weights keep products small; an empty rank gets weight 0.
    w = n / total
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
    no value is read back to the host."""
    if running_mean is not None:
        running_mean.lerp_(mean.to(running_mean.dtype), _weight(momentum, running_mean))
    if running_var is not None:
        unbiased = var * total / (total - 1)
        running_var.lerp_(unbiased.to(running_var.dtype), _weight(momentum, running_var))


def _weight(momentum: Union[float, Tensor], like: Tensor):
    if isinstance(momentum, Tensor):
        return momentum.to(device=like.device, dtype=like.dtype)
    return float(momentum)
