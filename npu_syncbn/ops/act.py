"""The fused activation's two ops as compositions of the plain ones: the
kernels of every implementation that has no fused kernel of its own (CPU,
torch-npu's aclnn fallback, float64 on the emulated device), and the
definition the fused AscendC kernels are tested against (bitwise).

* ``batch_norm_elemt_act``: elemt, then ``+ residual`` in input's dtype (one
  rounding, as an unfused add), then ReLU;
* ``batch_norm_backward_reduce_relu``: ``grad_sum = threshold_backward(
  grad_out, output, 0)``, then backward_reduce of grad_sum; grad_sum last.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import checks


def elemt_act(elemt: Callable) -> Callable:
    """batch_norm_elemt_act over ``elemt`` (an implementation of batch_norm_elemt)."""

    def batch_norm_elemt_act(input, weight, bias, mean, invstd, eps, residual, relu):
        checks.validate_elemt_act(input, weight, bias, mean, invstd, residual)
        y = elemt(input, weight, bias, mean, invstd, eps)
        if residual is not None:
            y.add_(residual)  # y is fresh: in place is the unfused add's single rounding
        return y.relu_() if relu else y

    return batch_norm_elemt_act


def backward_reduce_relu(backward_reduce: Callable) -> Callable:
    """batch_norm_backward_reduce_relu over ``backward_reduce``."""

    def batch_norm_backward_reduce_relu(grad_out, output, input, mean, invstd, weight, input_g, weight_g, bias_g):
        checks.validate_backward_reduce_relu(grad_out, output, input, mean, invstd, weight)
        grad_sum = torch.ops.aten.threshold_backward(grad_out, output, 0)
        return (*backward_reduce(grad_sum, input, mean, invstd, weight, input_g, weight_g, bias_g), grad_sum)

    return batch_norm_backward_reduce_relu
