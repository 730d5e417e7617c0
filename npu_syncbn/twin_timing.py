"""The twin's Ascend timing model, from Python (op_kernels/twin/include/twin_timing*.h).

While timing is on, every kernel launch of :mod:`npu_syncbn.twin` is also
played as the instructions it issued (per core: MTE2, V, MTE3 and scalar
queues with their dependencies, all cores together under the SoC's HBM
bandwidth), from published per-core figures (Huawei's msKPP tables for the
910B) and stated guesses; every figure is in ``twin_timing_params.h``. It is a
model, not a measurement of hardware.

* ``timing(mode="on")``: a context manager; ``"time_only"`` skips the
  kernels' per-element work (outputs are garbage, times the same), for large
  shapes.
* ``last_op()``: the modelled launches of the last twin op.
* ``host_costs()``, ``hbm_gbps()``, ``dma_ns()``, ``vector_ns()``: the model's figures.
* ``run_kernel(name, cores, nbytes, arg)``: one of the test kernels of
  ``op_kernels/twin/tests/timing_kernels.cpp``, then ``last_op()``.
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Dict, Iterator, List, Tuple

from . import twin

__all__ = ["timing", "last_op", "host_costs", "hbm_gbps", "dma_ns", "vector_ns", "run_kernel", "PIPES"]

MODES = {"off": 0, "on": 1, "time_only": 2}
PIPES = ("S", "V", "MTE2", "MTE3")
HOST_COST_FIELDS = ("kernel_start_us", "fill_kernel_us", "h2d_device_us", "launch_host_us", "alloc_host_us",
                    "h2d_host_us", "op_dispatch_us")
_D = ctypes.c_double
_declared = False


def _lib() -> ctypes.CDLL:
    global _declared
    lib = twin.library()
    if not _declared:
        lib.twin_set_timing.argtypes, lib.twin_set_timing.restype = [ctypes.c_int], ctypes.c_int
        lib.twin_timing_launches.argtypes, lib.twin_timing_launches.restype = [], ctypes.c_int
        lib.twin_set_timing_ablation.argtypes = [ctypes.c_int]
        lib.twin_set_timing_ablation.restype = ctypes.c_int
        lib.twin_timing_get.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        lib.twin_timing_get.restype = ctypes.c_int
        lib.twin_timing_host_costs.argtypes, lib.twin_timing_host_costs.restype = [ctypes.c_void_p], None
        lib.twin_timing_dma_ns.argtypes, lib.twin_timing_dma_ns.restype = [ctypes.c_int, _D], _D
        lib.twin_timing_vector_ns.argtypes, lib.twin_timing_vector_ns.restype = [_D, ctypes.c_uint64], _D
        lib.twin_run_timing_kernel.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint64]
        lib.twin_run_timing_kernel.restype = ctypes.c_int
        _declared = True
    return lib


ABLATIONS = {"pipe_all": 1, "granule": 2, "scalar_stall": 4}


@contextlib.contextmanager
def timing(mode: str = "on", without: Tuple[str, ...] = ()) -> Iterator[None]:
    """Times every twin launch inside the block (``"on"``, or ``"time_only"``:
    the per-element work skipped). ``without``: what-if switches, to see what a
    cause costs by leaving it out: ``"pipe_all"`` (PIPE_ALL barriers play as
    no-ops; the data dependencies they covered still hold), ``"granule"``
    (bursts cost their bytes, not whole 512-byte granules), ``"scalar_stall"``
    (the scalar unit issues past a GetValue / SetValue without waiting for
    it: optimistic). The previous settings come back after the block."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    unknown = [w for w in without if w not in ABLATIONS]
    if unknown:
        raise ValueError(f"without must name switches of {sorted(ABLATIONS)}, got {unknown}")
    lib = _lib()
    old = lib.twin_set_timing(MODES[mode])
    old_flags = lib.twin_set_timing_ablation(sum(ABLATIONS[w] for w in set(without)))
    try:
        yield
    finally:
        lib.twin_set_timing(old)
        lib.twin_set_timing_ablation(old_flags)


def last_op() -> List[Dict[str, object]]:
    """One dict per launch of the last twin op that ran with timing on:
    ``kernel``, ``us`` (the slowest core), ``cores``, ``busy_cores`` (cores
    that moved bytes), ``mean_core_us`` (their mean end), ``pipe_us`` {pipe:
    the busiest core's busy time}, ``barrier_us`` (zero-cost nodes: 0),
    ``hbm_bytes``, ``instrs``, ``barriers`` (PIPE_ALL / SyncAll on the slowest
    core), ``hbm_gbps`` and ``clock_ghz`` of the model."""
    lib = _lib()
    out = []
    name = ctypes.create_string_buffer(96)
    vals = (_D * 14)()
    for i in range(lib.twin_timing_launches()):
        lib.twin_timing_get(i, name, 96, vals)
        v = list(vals)
        out.append(dict(kernel=name.value.decode(), us=v[0] / 1e3, cores=int(v[1]), busy_cores=int(v[2]),
                        mean_core_us=v[3] / 1e3, pipe_us={p: v[4 + j] / 1e3 for j, p in enumerate(PIPES)},
                        hbm_bytes=v[9], instrs=int(v[10]), barriers=int(v[11]), hbm_gbps=v[12], clock_ghz=v[13]))
    return out


def host_costs() -> Dict[str, float]:
    """The host and launch costs of the model (us), by field name."""
    vals = (_D * 7)()
    _lib().twin_timing_host_costs(vals)
    return dict(zip(HOST_COST_FIELDS, list(vals)))


def hbm_gbps() -> float:
    """The chip-wide HBM bandwidth (GB/s) of the emulated SoC in the model."""
    with timing("on"):
        run_kernel("one_copy", 1, 512, 32)
        return last_op()[0]["hbm_gbps"]


def dma_ns(nbytes: float, into_ub: bool = True) -> float:
    """Modelled time of one contiguous transfer of ``nbytes`` on one core alone
    (GM -> UB on MTE2, else UB -> GM on MTE3)."""
    return _lib().twin_timing_dma_ns(2 if into_ub else 3, float(nbytes))


def vector_ns(cycles_per_repeat: float, nbytes: int) -> float:
    """Modelled time of one vector instruction over ``nbytes``."""
    return _lib().twin_timing_vector_ns(float(cycles_per_repeat), int(nbytes))


def run_kernel(name: str, cores: int, nbytes: int, arg: int = 0) -> List[Dict[str, object]]:
    """Runs timing test kernel ``name`` on ``cores`` cores over a zeroed,
    512-byte aligned GM buffer of ``nbytes``; returns :func:`last_op` (timing
    must be on)."""
    twin._launch("twin_run_timing_kernel", name.encode(), int(cores), int(nbytes), int(arg))
    return last_op()
