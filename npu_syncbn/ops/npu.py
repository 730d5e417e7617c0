"""PrivateUse1 (Ascend NPU) kernels of the five ops.

Two routes, chosen once at import:

1. Our AscendC kernels, when ``libnpu_syncbn_npu.so`` has been built on an
   Ascend machine (op_kernels/CMakeLists.txt, see ci/npu_check.sh). That
   library registers itself with ``TORCH_LIBRARY_IMPL(npu_syncbn, PrivateUse1, m)``.
   It links against torch-npu, so torch_npu is imported first, only then.
2. Otherwise thin wrappers over torch-npu's builtin aten ops (aclnn kernels),
   except the gather: torch-npu's merges sums of squares in fp32, so the
   gather uses our Chan merge from ``merge.py`` (a few (W, C) tensor ops).

Nothing here imports torch_npu unless the custom library exists: tensors on
an NPU imply torch-npu is already loaded by the caller.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

from . import checks
from .cpu import gather_stats
from .schema import LIBRARY, stats_dtype

LIBRARY_FILE = "libnpu_syncbn_npu.so"
ENV_KERNELS = "NPU_SYNCBN_KERNELS"


def custom_kernel_path() -> Optional[str]:
    """Path of the built AscendC kernel library, or None when not built."""
    explicit = os.environ.get(ENV_KERNELS)
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"{ENV_KERNELS}={explicit!r} does not name a file")
        return explicit
    default = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_lib", LIBRARY_FILE)
    return default if os.path.isfile(default) else None


def _load_custom_kernels(path: str) -> None:
    importlib.import_module("torch_npu")
    torch.ops.load_library(path)


def batch_norm_stats(input, eps):
    checks.validate_stats(input, eps)
    return torch.batch_norm_stats(input, eps)


def batch_norm_gather_stats_with_counts(input, mean, invstd, running_mean, running_var, momentum, eps, counts):
    checks.validate_gather(input, mean, invstd, running_mean, running_var, momentum, eps, counts)
    sd = stats_dtype(input)
    return gather_stats(mean.to(sd), invstd.to(sd), running_mean, running_var, momentum, eps, counts)


def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
    checks.validate_elemt(input, weight, bias, mean, invstd)
    return torch.batch_norm_elemt(input, weight, bias, mean, invstd, eps)


def batch_norm_backward_reduce(grad_out, input, mean, invstd, weight, input_g, weight_g, bias_g):
    checks.validate_backward_reduce(grad_out, input, mean, invstd, weight)
    # Ask aten for everything: our schema promises four defined outputs.
    return tuple(torch.batch_norm_backward_reduce(grad_out, input, mean, invstd, weight, True, True, True))


def batch_norm_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    checks.validate_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count)
    return torch.batch_norm_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count.to(torch.int32))


FALLBACK_KERNELS = {
    "batch_norm_stats": batch_norm_stats,
    "batch_norm_gather_stats_with_counts": batch_norm_gather_stats_with_counts,
    "batch_norm_elemt": batch_norm_elemt,
    "batch_norm_backward_reduce": batch_norm_backward_reduce,
    "batch_norm_backward_elemt": batch_norm_backward_elemt,
}


def register() -> str:
    """Register the PrivateUse1 kernels; return which route was taken."""
    path = custom_kernel_path()
    if path is not None:
        _load_custom_kernels(path)
        return "ascendc"
    for name, fn in FALLBACK_KERNELS.items():
        LIBRARY.impl(name, fn, "PrivateUse1")
    return "aten-fallback"


ROUTE = register()
