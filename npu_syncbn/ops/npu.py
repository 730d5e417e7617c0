"""PrivateUse1 (Ascend NPU) kernels of the ops (the five and the fused activation's two).

Three routes, chosen once at import (``ROUTE`` says which):

0. ``"emulated"``: under ``NPU_SYNCBN_EMULATE_NPU=1`` (``npu_syncbn.emulation``)
   the emulated device's library registers route 1's kernels, run in the CPU
   twin; float64, which they do not take, runs our CPU kernels on the device
   memory (torch has no CPU kernel of the aten ops route 2 calls).

1. ``"ascendc"``: our AscendC kernels, when ``libnpu_syncbn_npu.so`` has been
   built on an Ascend machine (op_kernels/CMakeLists.txt, at install or by
   ci/npu_check.sh). It registers them as the PrivateUse1 kernels of namespace
   ``npu_syncbn_ascendc`` (defined here with the same schemas); each
   ``npu_syncbn`` call goes there, except float64 input, which the kernels do
   not take: that call takes route 2 (``routed``).
   The library links against torch-npu, so torch_npu is imported first, only then.
2. ``"aten-fallback"``: thin wrappers over torch-npu's builtin aten ops (aclnn
   kernels), except the gather: torch-npu's merges sums of squares in fp32, so
   the gather uses our Chan merge from ``merge.py`` (a few (W, C) tensor ops).

Nothing here imports torch_npu unless the custom library exists: tensors on
an NPU imply torch-npu is already loaded by the caller.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

from . import act, checks
from .cpu import gather_stats
from .schema import LIBRARY, NAMESPACE, SCHEMAS, stats_dtype

LIBRARY_FILE = "libnpu_syncbn_npu.so"
ENV_KERNELS = "NPU_SYNCBN_KERNELS"
ASCENDC_NAMESPACE = "npu_syncbn_ascendc"  # the C++ library's TORCH_LIBRARY_IMPL namespace
_ascendc_library = None  # kept alive: dropping it unregisters the schemas


def custom_kernel_path() -> Optional[str]:
    """Path of the built AscendC kernel library, or None when not built."""
    explicit = os.environ.get(ENV_KERNELS)
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"{ENV_KERNELS}={explicit!r} does not name a file")
        return explicit
    default = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_lib", LIBRARY_FILE)
    return default if os.path.isfile(default) else None


def _ascendc_ops() -> dict:
    """Namespace npu_syncbn_ascendc, defined once with our schemas; its ops by name."""
    global _ascendc_library
    if _ascendc_library is None:
        _ascendc_library = torch.library.Library(ASCENDC_NAMESPACE, "DEF")
        for name, schema in SCHEMAS.items():
            _ascendc_library.define(name + schema)
    return {name: getattr(getattr(torch.ops, ASCENDC_NAMESPACE), name) for name in SCHEMAS}


def _load_custom_kernels(path: str) -> dict:
    """Load the AscendC library; return its ops by name."""
    ops = _ascendc_ops()
    importlib.import_module("torch_npu")
    torch.ops.load_library(path)
    return ops


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
    "batch_norm_elemt_act": act.elemt_act(batch_norm_elemt),
    "batch_norm_backward_reduce_relu": act.backward_reduce_relu(batch_norm_backward_reduce),
}


# Each op's validator and how many of the op's leading arguments it takes.
VALIDATORS = {
    "batch_norm_stats": (checks.validate_stats, 2),
    "batch_norm_gather_stats_with_counts": (checks.validate_gather, 8),
    "batch_norm_elemt": (checks.validate_elemt, 5),
    "batch_norm_backward_reduce": (checks.validate_backward_reduce, 5),
    "batch_norm_backward_elemt": (checks.validate_backward_elemt, 8),
    "batch_norm_elemt_act": (lambda i, w, b, m, s, eps, r: checks.validate_elemt_act(i, w, b, m, s, r), 7),
    "batch_norm_backward_reduce_relu": (checks.validate_backward_reduce_relu, 6),
}


def routed(name: str, kernel, fallback):
    """PrivateUse1 kernel of op `name`: `kernel` (ours), but `fallback` for float64
    input, whose float64 statistics our float32/float16/bfloat16 kernels cannot give.
    Our kernels get the op's validation first, as the CPU kernels do: the host
    glue sizes launches from the input alone, so a short weight would be read
    out of bounds on the device."""
    schema = getattr(getattr(torch.ops, NAMESPACE), name).default._schema
    position = [a.name for a in schema.arguments].index("input")
    validate, nargs = VALIDATORS[name]

    def route(*args):
        if args[position].dtype == torch.float64:
            return fallback(*args)
        validate(*args[:nargs])
        return kernel(*args)

    route.__name__ = f"{name}_routed"
    return route


def register() -> str:
    """Register the PrivateUse1 kernels; return which route was taken."""
    from .. import emulation

    kernels, route = FALLBACK_KERNELS, "aten-fallback"
    path = custom_kernel_path()
    if emulation.active():
        # The emulated device's library registered the npu_syncbn_ascendc kernels
        # (our AscendC sources in the twin, launched as npu_ops.cpp launches them).
        from ..emulation import device as emulated

        ascendc = _ascendc_ops()
        on_host = {name: emulated.host_kernel(getattr(getattr(torch.ops, NAMESPACE), name).default)
                   for name in FALLBACK_KERNELS}
        kernels = {name: routed(name, ascendc[name], on_host[name]) for name in FALLBACK_KERNELS}
        route = "emulated"
    elif path is not None:
        ascendc = _load_custom_kernels(path)
        kernels = {name: routed(name, ascendc[name], fn) for name, fn in FALLBACK_KERNELS.items()}
        route = "ascendc"
    for name, fn in kernels.items():
        LIBRARY.impl(name, fn, "PrivateUse1")
    return route


ROUTE = register()
