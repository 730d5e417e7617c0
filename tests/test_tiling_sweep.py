"""Every valid shape gets a kernel plan: the host tiling of each op (the five's
kernels and the fused activation's), in both layouts (row: (N, C, L); C-last:
channels_last / (N, C)), for float32 / float16 / bfloat16, C = 1..4096 and a
few up to 65535, N*L from 1 to 10^8, on 48 and 40 cores (910B2, 910B3/B4),
with the UB the glue plans (192 KiB less the reserve). A plan must exist, fit
the UB the op may plan (the twin's check at launch) and respect the copy and
core limits; no op needs a fallback route for want of a plan."""
import ctypes
import time

import pytest

from npu_syncbn import twin

OPS = {"stats": 0, "elemt": 1, "backward_reduce": 2, "backward_elemt": 3, "elemt_act": 4,
       "backward_reduce_relu": 5}
DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}
UB_PLANNED = 192 * 1024 - 1024  # BN_UB_BYTES less soc.h's BN_UB_RESERVE_BYTES, as bn_ops.h plans
CHANNELS = list(range(1, 4097)) + [4099, 5000, 8191, 12345, 32768, 65535]
ROWS = [1, 2, 7, 31, 48, 1000, 12544, 10**6, 10**8]


def _array(values):
    return (ctypes.c_uint64 * len(values))(*values)


@pytest.mark.parametrize("cores", [48, 40])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_every_shape_has_a_plan(op, dtype, cores):
    cs, nls = _array(CHANNELS), _array(ROWS)
    start = time.perf_counter()
    failures = twin.library().twin_tiling_sweep(op, dtype, cores, UB_PLANNED, cs, len(CHANNELS), nls, len(ROWS))
    assert failures == 0, f"{failures} shapes without a plan; first: {twin.library().twin_last_error().decode()}"
    print(f"{len(CHANNELS) * len(ROWS) * 4} tilings in {time.perf_counter() - start:.2f} s")


def test_sweep_reports_a_shape_without_a_plan():
    """The sweep itself can fail: a UB of 1 KiB holds no plan, and the first
    failure is named."""
    cs, nls = _array([300]), _array([1000])
    assert twin.library().twin_tiling_sweep(3, 0, 48, 1024, cs, 1, nls, 1) > 0
    assert "C 300" in twin.library().twin_last_error().decode()
