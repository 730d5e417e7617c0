"""The ``.out`` overloads of the five ops, as aten has them.

aten defines ``batch_norm_stats.out``, ``batch_norm_gather_stats_with_counts.out``,
``batch_norm_elemt.out``, ``batch_norm_backward_reduce.out`` and
``batch_norm_backward_elemt.out`` (see ``torch.ops.aten.<op>.overloads()``),
so code written for aten may call ``torch.ops.npu_syncbn.batch_norm_elemt(...,
out=t)``. Each overload here takes the functional op's arguments plus
keyword-only outputs (``out0``, ``out1``, ... or ``out``, as aten names them)
and returns those outputs.

Semantics are those of aten's generated out= kernels:

* the functional op computes the result (on CPU, the NPU or a fake tensor:
  the same dispatch, so the same kernel and the same argument checks);
* each output is resized to the result's shape as ``at::native::resize_output``
  does: silently when it already has that shape or has no elements, with a
  UserWarning when a non-empty output of another shape is resized;
* the result is copied in (``copy_``: an output of another float dtype
  receives the cast value); an output on another device than the input is
  rejected with an error naming it.

One implementation serves the CPU and PrivateUse1 (NPU) keys: it calls the
functional op through the dispatcher, which then picks that device's kernel
(the AscendC library's or the aclnn fallback on an NPU). The fake kernel runs
the functional op's fake kernel and resizes the fake outputs.
"""
from __future__ import annotations

import warnings
from typing import Sequence, Tuple

import torch
from torch import Tensor

from .schema import LIBRARY, SCHEMAS, qualified

# op -> names of its outputs in aten's .out schema (alias sets start after the
# functional schema's own: gather already uses (a!) and (b!) for the running stats).
OUT_NAMES = {
    "batch_norm_stats": ("out0", "out1"),
    "batch_norm_gather_stats_with_counts": ("out0", "out1"),
    "batch_norm_elemt": ("out",),
    "batch_norm_backward_reduce": ("out0", "out1", "out2", "out3"),
    "batch_norm_backward_elemt": ("out",),
}


def out_schema(name: str) -> str:
    """The ``.out`` schema of op ``name``: its arguments, then ``*, Tensor(x!) out...``."""
    args, _ = SCHEMAS[name].split(" -> ")
    sets = "cdef" if name == "batch_norm_gather_stats_with_counts" else "abcd"
    outs = [f"Tensor({sets[i]}!) {o}" for i, o in enumerate(OUT_NAMES[name])]
    returns = ", ".join(f"Tensor({sets[i]}!)" for i in range(len(outs)))
    return f"{args[:-1]}, *, {', '.join(outs)}) -> " + (f"({returns})" if len(outs) > 1 else returns)


def resize_output(out: Tensor, shape: Sequence[int], name: str) -> None:
    """Resize ``out`` to ``shape`` as at::native::resize_output does (warning
    when a non-empty tensor of another shape is resized)."""
    shape = tuple(shape)
    if tuple(out.shape) == shape:
        return
    if out.numel() != 0:
        warnings.warn(
            f"{name}: an output with elements was resized from shape {tuple(out.shape)} to the required "
            f"shape {shape}. aten deprecates resizing non-empty outputs; pass an output of the right shape, "
            "or one resized to zero elements with t.resize_(0)",
            UserWarning,
            stacklevel=3,
        )
    out.resize_(shape)


def _write(results: Tuple[Tensor, ...], outs: Tuple[Tensor, ...], name: str, device: torch.device, copy: bool):
    for label, out, result in zip(OUT_NAMES[name], outs, results):
        if not isinstance(out, Tensor):
            raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(out).__name__}")
        if out.device != device:
            raise ValueError(f"{name}: {label} must be on the input's device {device}, got {out.device}")
        resize_output(out, result.shape, f"{name}.out")
        if copy:
            out.copy_(result)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _make(name: str, fake: bool):
    functional = getattr(torch.ops.npu_syncbn, name).default
    count = len(OUT_NAMES[name])

    def kernel(*args, **kwargs):
        outs = tuple(kwargs[o] for o in OUT_NAMES[name])
        result = functional(*args)
        results = (result,) if count == 1 else tuple(result)
        # A fake output has no data to copy: its shape is what a trace needs.
        device = next(a.device for a in args if isinstance(a, Tensor))
        return _write(results, outs, name, device, copy=not fake)

    kernel.__name__ = f"{name}_out{'_fake' if fake else ''}"
    return kernel


for _name in SCHEMAS:
    LIBRARY.define(f"{_name}.out{out_schema(_name)}")
    _kernel = _make(_name, fake=False)
    LIBRARY.impl(f"{_name}.out", _kernel, "CPU")
    LIBRARY.impl(f"{_name}.out", _kernel, "PrivateUse1")
    torch.library.register_fake(qualified(f"{_name}.out"), _make(_name, fake=True), lib=LIBRARY)
