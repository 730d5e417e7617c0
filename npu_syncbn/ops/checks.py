"""Argument checks shared by every implementation of the five ops.

Each check raises with the argument's name and the form it expects, so a bad
call fails the same way on CPU, on the NPU and in the twin. Checks look only
at shapes, dtypes and devices (host metadata): they never read tensor values,
so they cost no device synchronization.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_input(input: Tensor, name: str = "input") -> int:
    """Validate an (N, C, *) float tensor; return C."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, *), got {type(input).__name__}")
    if input.dim() < 2:
        raise ValueError(f"{name} must have shape (N, C, *) with at least 2 dims, got shape {tuple(input.shape)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float64, float32, float16 or bfloat16, got {input.dtype}")
    return input.shape[1]


def check_like_input(t: Tensor, input: Tensor, name: str, same_dtype: bool = False) -> None:
    """``t`` (e.g. grad_out) must have input's shape and device (and dtype
    when ``same_dtype``: what the fused kernels read as input's element type)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if same_dtype and t.dtype != input.dtype:
        raise TypeError(f"{name} must have the input's dtype {input.dtype}, got {t.dtype}")
    if t.shape != input.shape:
        raise ValueError(f"{name} must have the input's shape {tuple(input.shape)}, got {tuple(t.shape)}")
    if t.device != input.device:
        raise ValueError(f"{name} must be on the input's device {input.device}, got {t.device}")


def check_channel_vector(t: Optional[Tensor], c: int, name: str, device: torch.device, optional: bool = False) -> None:
    """``t`` must be a float tensor of shape (C,) on ``device`` (or None when optional)."""
    if t is None:
        if optional:
            return
        raise TypeError(f"{name} must be a tensor of shape ({c},), got None")
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor of shape ({c},), got {type(t).__name__}")
    if t.shape != (c,):
        raise ValueError(f"{name} must have shape ({c},) (one value per channel), got {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} must be on the input's device {device}, got {t.device}")


def check_eps(eps: float) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (float, int)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite float > 0, got {eps!r}")


def check_momentum(momentum: float) -> None:
    if isinstance(momentum, bool) or not isinstance(momentum, (float, int)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}")


def check_rank_stats(mean: Tensor, invstd: Tensor, counts: Tensor, device: torch.device) -> None:
    """Per-rank stats for the gather op: mean and invstd (W, C), counts (W,)."""
    for name, t in (("mean", mean), ("invstd", invstd)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape (world_size, C), got {shape}")
        if t.device != device:
            raise ValueError(f"{name} must be on the input's device {device}, got {t.device}")
    if mean.shape != invstd.shape:
        raise ValueError(f"mean and invstd must have the same shape (world_size, C), got {tuple(mean.shape)} and {tuple(invstd.shape)}")
    check_counts(counts, mean.shape[0], device)


def check_counts(counts: Tensor, world_size: Optional[int], device: torch.device) -> None:
    if not isinstance(counts, Tensor) or counts.dim() != 1:
        shape = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
        raise ValueError(f"counts must be a 1-D tensor of per-rank element counts (world_size,), got {shape}")
    if world_size is not None and counts.shape[0] != world_size:
        raise ValueError(f"counts must have one entry per row of mean ({world_size}), got {counts.shape[0]}")
    if counts.device != device:
        raise ValueError(f"counts must be on the input's device {device}, got {counts.device}")


# One validator per op: the CPU kernels, the NPU kernels and the fake kernels
# all call these, so a bad call fails alike in eager, on the NPU and when traced.


def validate_stats(input: Tensor, eps: float) -> int:
    c = check_input(input)
    check_eps(eps)
    return c


def validate_gather(input, mean, invstd, running_mean, running_var, momentum, eps, counts) -> int:
    c = check_input(input)
    check_rank_stats(mean, invstd, counts, input.device)
    if mean.shape[1] != c:
        raise ValueError(f"mean must have shape (world_size, {c}) to match input's C, got {tuple(mean.shape)}")
    check_channel_vector(running_mean, c, "running_mean", input.device, optional=True)
    check_channel_vector(running_var, c, "running_var", input.device, optional=True)
    check_momentum(momentum)
    check_eps(eps)
    return c


def validate_elemt(input, weight, bias, mean, invstd) -> int:
    c = check_input(input)
    for name, t, optional in (("weight", weight, True), ("bias", bias, True), ("mean", mean, False), ("invstd", invstd, False)):
        check_channel_vector(t, c, name, input.device, optional)
    return c


def validate_backward_reduce(grad_out, input, mean, invstd, weight) -> int:
    c = check_input(input)
    check_like_input(grad_out, input, "grad_out")
    for name, t, optional in (("mean", mean, False), ("invstd", invstd, False), ("weight", weight, True)):
        check_channel_vector(t, c, name, input.device, optional)
    return c


def validate_elemt_act(input, weight, bias, mean, invstd, residual) -> int:
    c = validate_elemt(input, weight, bias, mean, invstd)
    if residual is not None:
        check_like_input(residual, input, "residual", same_dtype=True)
    return c


def validate_backward_reduce_relu(grad_out, output, input, mean, invstd, weight) -> int:
    c = validate_backward_reduce(grad_out, input, mean, invstd, weight)
    check_like_input(output, input, "output", same_dtype=True)
    return c


def validate_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count) -> int:
    c = check_input(input)
    check_like_input(grad_out, input, "grad_out")
    for name, t, optional in (
        ("mean", mean, False), ("invstd", invstd, False), ("weight", weight, True),
        ("sum_dy", sum_dy, False), ("sum_dy_xmu", sum_dy_xmu, False),
    ):
        check_channel_vector(t, c, name, input.device, optional)
    check_counts(count, None, input.device)
    return c
