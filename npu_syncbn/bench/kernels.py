"""The four C kernels of the fused CPU step, timed alone beside the floor's
passes: where a step stands against the floor, kernel by kernel, and how
much of it is neither kernel nor floor (Python, autograd, the rendezvous).

Each kernel is one ctypes call with its arguments and outputs prepared
beforehand, as the fused step makes it from C: the Python wrappers of
npu_syncbn.ops.cpu_fast (checks, output allocation) cost 10-40 us a call on
the 2-core VM, a third of the kernel at 256x1024, and belong to the step's
rest, not to the kernel."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

# kernel -> activations it moves: reads + writes (stats reads x; elemt reads x,
# writes y; the reduce reads dy and x; the backward elemt reads dy, x, writes dx)
TRAFFIC = {"stats": 1, "elemt": 2, "reduce": 2, "backward_elemt": 3}


def kernel_passes(x, grad) -> Dict[str, Tuple[Callable[[], object], int]]:
    """name -> (call, activations moved) for the C kernels on ``x`` and
    ``grad``; empty when they do not take this dtype or layout."""
    import torch

    from ..ops import cpu_fast

    src = x.detach()
    lib = cpu_fast.library()
    lay = cpu_fast.layout(src)
    if lib is None or lay is None or cpu_fast.layout(grad) != lay or grad.dtype != src.dtype:
        return {}
    kind, n, cc, l = lay
    c = src.shape[1]
    code, nt = cpu_fast.DTYPE_CODES[src.dtype], torch.get_num_threads()
    weight, bias = torch.ones(c), torch.zeros(c)
    mean, invstd = cpu_fast.stats(src, 1e-5)
    sum_dy, sum_dy_xmu, _, _ = cpu_fast.backward_reduce(grad, src, mean, invstd)
    count = float(src.numel() // c)
    y, dx = torch.empty_like(src), torch.empty_like(src)
    m2, i2, s1, s2, gw, gb = (torch.empty(c) for _ in range(6))  # outputs, apart from the inputs above
    px, pg, py, pdx = src.data_ptr(), grad.data_ptr(), y.data_ptr(), dx.data_ptr()
    pm, pi, pw, pb = mean.data_ptr(), invstd.data_ptr(), weight.data_ptr(), bias.data_ptr()
    om, oi, o1, o2, ow, ob = (t.data_ptr() for t in (m2, i2, s1, s2, gw, gb))
    pdy, pdxm = sum_dy.data_ptr(), sum_dy_xmu.data_ptr()
    calls = {
        "stats": lambda: lib.nsb_stats(px, code, kind, n, cc, l, 1e-5, om, oi, nt),
        "elemt": lambda: lib.nsb_elemt(px, py, code, kind, n, cc, l, pm, pi, pw, pb, nt),
        "reduce": lambda: lib.nsb_backward_reduce(pg, px, code, kind, n, cc, l, pm, pi, o1, o2, ow, ob, nt),
        "backward_elemt": lambda: lib.nsb_backward_elemt(pg, px, pdx, code, kind, n, cc, l, pm, pi, pw, pdy, pdxm,
                                                         count, nt),
    }
    keep = (src, grad, y, dx, weight, bias, mean, invstd, sum_dy, sum_dy_xmu, m2, i2, s1, s2, gw, gb)
    # (each call holds the tensors behind its pointers)
    return {name: (lambda call=call, keep=keep: call(), TRAFFIC[name]) for name, call in calls.items()}


def kernel_rows(summaries: Dict[str, Dict[str, float]], act_bytes: int, copy_gbps: float) -> Dict[str, Dict]:
    """Per kernel: its time, its bandwidth (activations moved / median time)
    and that bandwidth over the copy's (1.0: the kernel moves data as fast as
    a copy does)."""
    rows = {}
    for name, stat in summaries.items():
        gbps = TRAFFIC[name] * act_bytes / stat["median"] / 1e6
        rows[name] = {"ms": stat, "GBps": gbps, "over_copy_bandwidth": gbps / copy_gbps}
    return rows
