"""The ops of namespace ``npu_syncbn``: schemas and fake (meta) kernels.

Five follow the aten ops of the same names, with two deliberate differences
that make them safer to use:

* ``batch_norm_gather_stats_with_counts`` marks ``running_mean`` and
  ``running_var`` as mutated (aten mutates them without saying so), so
  functionalization and torch.compile see the update.
* ``batch_norm_backward_reduce`` always returns four defined tensors; the
  ``input_g``/``weight_g``/``bias_g`` flags only let a kernel skip work.

Two more are the fused activation's (``SyncBatchNorm(activation="relu")`` and
``forward(x, residual)``), defined so that every implementation gives the bits
of the unfused ops:

* ``batch_norm_elemt_act``: ``y = batch_norm_elemt(...)`` in input's dtype,
  then ``y = y + residual`` (when given: input's shape and dtype), then
  ``relu(y)`` (when ``relu``). y keeps input's memory format.
* ``batch_norm_backward_reduce_relu``: ``grad_sum = threshold_backward(
  grad_out, output, 0)`` (grad_out where output > 0, else 0; output is the
  forward's result), then ``batch_norm_backward_reduce(grad_sum, ...)``;
  returns its four tensors and ``grad_sum`` (input's shape, dtype and memory
  format): what backward_elemt reads and the residual's gradient.

Statistics are float32 for float16/bfloat16/float32 input and float64 for
float64 input. ``C`` is dim 1 of ``input``; reductions run over every other dim.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import checks

NAMESPACE = "npu_syncbn"

# Kept alive for the whole process: dropping the Library object unregisters the ops.
LIBRARY = torch.library.Library(NAMESPACE, "DEF")

SCHEMAS = {
    "batch_norm_stats": "(Tensor input, float eps) -> (Tensor mean, Tensor invstd)",
    "batch_norm_gather_stats_with_counts": (
        "(Tensor input, Tensor mean, Tensor invstd, Tensor(a!)? running_mean, Tensor(b!)? running_var, "
        "float momentum, float eps, Tensor counts) -> (Tensor mean, Tensor invstd)"
    ),
    "batch_norm_elemt": "(Tensor input, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd, float eps) -> Tensor",
    "batch_norm_backward_reduce": (
        "(Tensor grad_out, Tensor input, Tensor mean, Tensor invstd, Tensor? weight, bool input_g, bool weight_g, "
        "bool bias_g) -> (Tensor sum_dy, Tensor sum_dy_xmu, Tensor grad_weight, Tensor grad_bias)"
    ),
    "batch_norm_backward_elemt": (
        "(Tensor grad_out, Tensor input, Tensor mean, Tensor invstd, Tensor? weight, Tensor sum_dy, "
        "Tensor sum_dy_xmu, Tensor count) -> Tensor"
    ),
    "batch_norm_elemt_act": (
        "(Tensor input, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd, float eps, Tensor? residual, "
        "bool relu) -> Tensor"
    ),
    "batch_norm_backward_reduce_relu": (
        "(Tensor grad_out, Tensor output, Tensor input, Tensor mean, Tensor invstd, Tensor? weight, bool input_g, "
        "bool weight_g, bool bias_g) -> (Tensor sum_dy, Tensor sum_dy_xmu, Tensor grad_weight, Tensor grad_bias, "
        "Tensor grad_sum)"
    ),
}

# The aten-shaped five (aten has ops of these names and semantics).
ATEN_SHAPED = tuple(list(SCHEMAS)[:5])

for _name, _schema in SCHEMAS.items():
    LIBRARY.define(_name + _schema)


def qualified(name: str) -> str:
    return f"{NAMESPACE}::{name}"


def stats_dtype(input: Tensor) -> torch.dtype:
    """float64 statistics for float64 input, float32 for every other float dtype."""
    return torch.float64 if input.dtype == torch.float64 else torch.float32


@torch.library.register_fake(qualified("batch_norm_stats"), lib=LIBRARY)
def _stats_fake(input: Tensor, eps: float):
    c = checks.validate_stats(input, eps)
    return input.new_empty(c, dtype=stats_dtype(input)), input.new_empty(c, dtype=stats_dtype(input))


@torch.library.register_fake(qualified("batch_norm_gather_stats_with_counts"), lib=LIBRARY)
def _gather_fake(input, mean, invstd, running_mean, running_var, momentum, eps, counts):
    c = checks.validate_gather(input, mean, invstd, running_mean, running_var, momentum, eps, counts)
    return mean.new_empty(c), mean.new_empty(c)


@torch.library.register_fake(qualified("batch_norm_elemt"), lib=LIBRARY)
def _elemt_fake(input, weight, bias, mean, invstd, eps):
    checks.validate_elemt(input, weight, bias, mean, invstd)
    return torch.empty_like(input)


@torch.library.register_fake(qualified("batch_norm_backward_reduce"), lib=LIBRARY)
def _reduce_fake(grad_out, input, mean, invstd, weight, input_g, weight_g, bias_g):
    c = checks.validate_backward_reduce(grad_out, input, mean, invstd, weight)
    sd = stats_dtype(input)
    wd = weight.dtype if weight is not None else sd
    return (
        input.new_empty(c, dtype=sd),
        input.new_empty(c, dtype=sd),
        input.new_empty(c, dtype=wd),
        input.new_empty(c, dtype=wd),
    )


@torch.library.register_fake(qualified("batch_norm_backward_elemt"), lib=LIBRARY)
def _backward_elemt_fake(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    checks.validate_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count)
    return torch.empty_like(input)


@torch.library.register_fake(qualified("batch_norm_elemt_act"), lib=LIBRARY)
def _elemt_act_fake(input, weight, bias, mean, invstd, eps, residual, relu):
    checks.validate_elemt_act(input, weight, bias, mean, invstd, residual)
    return torch.empty_like(input)


@torch.library.register_fake(qualified("batch_norm_backward_reduce_relu"), lib=LIBRARY)
def _reduce_relu_fake(grad_out, output, input, mean, invstd, weight, input_g, weight_g, bias_g):
    checks.validate_backward_reduce_relu(grad_out, output, input, mean, invstd, weight)
    return (*_reduce_fake(grad_out, input, mean, invstd, weight, input_g, weight_g, bias_g), torch.empty_like(input))
