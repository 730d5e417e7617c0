"""The autograd Function of synchronized BatchNorm: the data flow, nothing else.

forward:  stats -> one all_gather of [mean | invstd | count] -> merge (+ running
          stats update) -> elementwise
backward: reduce -> one all_reduce of [sum_dy | sum_dy_xmu] -> elementwise

Every rank takes part in both collectives, including a rank whose batch is
empty (count 0: it contributes nothing and gets empty outputs).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor

from . import comm, ops
from .ops.merge import invstd_to_var, update_running_stats
from .ops.schema import stats_dtype


class SyncBatchNormFunction(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with mean/invstd over the whole group.

    Shapes: input (N, C, *), weight/bias/running stats (C,). ``momentum`` is a
    float, or a 0-dim tensor for the cumulative average (no host read).
    Weight and bias gradients are this rank's share; the data-parallel wrapper
    sums them, as with torch.nn.SyncBatchNorm.
    """

    @staticmethod
    def forward(
        ctx,
        input: Tensor,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        running_mean: Optional[Tensor],
        running_var: Optional[Tensor],
        eps: float,
        momentum: Union[float, Tensor],
        group: dist.ProcessGroup,
        world_size: int,
    ) -> Tensor:
        c = input.shape[1]
        sd = stats_dtype(input)
        mean, invstd = ops.batch_norm_stats(input, eps)
        count = torch.full((1,), input.numel() // c, dtype=sd, device=input.device)

        rows = comm.all_gather_rows(torch.cat([mean, invstd, count]), group, world_size)
        mean_all, invstd_all, counts = rows[:, :c], rows[:, c : 2 * c], rows[:, 2 * c]

        if isinstance(momentum, Tensor):
            # Cumulative average: the op takes a float momentum, so update here.
            mean, invstd = ops.batch_norm_gather_stats_with_counts(input, mean_all, invstd_all, None, None, 0.0, eps, counts)
            update_running_stats(running_mean, running_var, mean, invstd_to_var(invstd, eps), counts.sum(), momentum)
        else:
            mean, invstd = ops.batch_norm_gather_stats_with_counts(
                input, mean_all, invstd_all, running_mean, running_var, momentum, eps, counts
            )

        ctx.save_for_backward(input, weight, mean, invstd, counts)
        ctx.group = group
        return ops.batch_norm_elemt(input, weight, bias, mean, invstd, eps)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        input, weight, mean, invstd, counts = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        sum_dy, sum_dy_xmu, grad_weight, grad_bias = ops.batch_norm_backward_reduce(
            grad_output, input, mean, invstd, weight, need_input, need_weight, need_bias
        )
        grad_input = None
        if need_input:
            c = input.shape[1]
            summed = comm.all_reduce_sum(torch.cat([sum_dy, sum_dy_xmu]), ctx.group)
            grad_input = ops.batch_norm_backward_elemt(
                grad_output, input, mean, invstd, weight, summed[:c], summed[c:], counts
            )
        return (
            grad_input,
            grad_weight if need_weight else None,
            grad_bias if need_bias else None,
            None, None, None, None, None, None,
        )
