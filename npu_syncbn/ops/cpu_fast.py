"""ctypes front of the fused CPU kernels (``op_kernels/cpu/syncbn_cpu.cpp``).

``libnpu_syncbn_cpu.so`` is built with g++ on first use (``twin_build.build_cpu``)
and loaded lazily. Every function here returns None instead of a result when
the fast path does not apply, and cpu.py then runs its aten composition:

* the library cannot be built or loaded (no compiler, read-only install, ...);
* ``NPU_SYNCBN_CPU_KERNELS=aten`` is set (read at every call);
* dtype float64 (statistics stay float64 on the aten path);
* dtype float16, unless ``NPU_SYNCBN_CPU_KERNELS=fast``: without AVX-512 the
  half conversions of these kernels (F16C is not auto-vectorized by gcc) make
  them slower than aten's, so float16 keeps aten by default (tests force it);
* a layout other than contiguous (N, C, *), channels_last / channels_last_3d,
  or 2-D (N, C); e.g. arbitrary strided views, or grad_out whose layout or
  dtype differs from the input's.

Layouts passed to C: NCL (layout 0) = (N, C, L) contiguous; NLC (layout 1) =
P rows of C channels (channels-last; 2-D input is NLC with P = N). A tensor
with C == 1 is the same memory either way and goes as one plane.

The library holds three builds of the kernels (baseline x86-64, AVX2 + FMA +
F16C, AVX-512) that give bitwise identical results (same lanes, same order,
no FMA contraction); it runs the best one the CPU reports unless
``NPU_SYNCBN_CPU_ISA`` names one (``baseline``, ``avx2``, ``avx512``; ``auto``
or unset: the best; read once, when the library is first used). A named
variant the CPU cannot run is an error (raised by every call that would use
the library), never a silent fallback.
:func:`isa` says which one runs (also in ``python -m npu_syncbn.info``).

The kernels split their outer loop over ``torch.get_num_threads()`` OpenMP
threads (torch's own libgomp, already loaded), so multi-threaded users keep
aten's parallelism; a library built without OpenMP is used only when
``torch.get_num_threads() == 1``. Per-channel vectors go in and come out as float32.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Optional, Tuple

import torch
from torch import Tensor

ENV = "NPU_SYNCBN_CPU_KERNELS"  # "aten": never use the C kernels; "fast": also for float16
ISA_ENV = "NPU_SYNCBN_CPU_ISA"  # "baseline" | "avx2" | "avx512" | "auto" (default)
ISA_NAMES = ("baseline", "avx2", "avx512")  # index = the library's level
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_AUTO_DTYPES = (torch.float32, torch.bfloat16)
NCL, NLC = 0, 1

_P, _I, _I64, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_double
_SIGNATURES = {
    "nsb_stats": [_P, _I, _I, _I64, _I64, _I64, _D, _P, _P, _I],
    "nsb_elemt": [_P, _P, _I, _I, _I64, _I64, _I64, _P, _P, _P, _P, _I],
    "nsb_backward_reduce": [_P, _P, _I, _I, _I64, _I64, _I64, _P, _P, _P, _P, _P, _P, _I],
    "nsb_backward_elemt": [_P, _P, _P, _I, _I, _I64, _I64, _I64, _P, _P, _P, _P, _P, _D, _I],
    "nsb_isa": [], "nsb_isa_best": [], "nsb_select_isa": [_I],
    "nsb_gather_merge": [_P, _P, _I64, _P, _I64, _I64, _I64, _D, _P, _P, _D, _P, _P],
    "nsb_seq_publish": [_P, _I64],  # shm_sync.cpp, for npu_syncbn/shm.py
    "nsb_seq_wait": [_P, _I64, _I, _I64, _D],
    "nsb_wait_time": [_P],
    "nsb_sum_rows_f32": [_P, _I64, _I, _I64, _P],
    "nsb_exchange": [_P, _I64, _I, _I, _I64, _I64, _I64, _D],
    # sync_step.cpp, for npu_syncbn/cpu_step.py
    "nsb_sync_forward": [_P, _P, _I, _I, _I64, _I64, _I64, _D, _P, _P, _P, _P, _D, _D, _D, _D, _D, _I,
                         _P, _I64, _P, _I64, _I, _I, _I64, _D, _P, _P, _P, _P, _I, _I, _P],
    "nsb_sync_backward": [_P, _P, _P, _I, _I, _I64, _I64, _I64, _P, _P, _P, _D,
                          _P, _I64, _P, _I64, _I, _I, _I64, _D, _P, _P, _P, _P, _I, _P],
}
NO_POSITIVE_COUNT = -3  # nsb_gather_merge: every rank's batch is empty

_lib = None
_tried = False
_openmp = False
_isa_error: Optional[Exception] = None  # $NPU_SYNCBN_CPU_ISA names a variant that cannot run here
_lock = threading.Lock()


class IsaError(RuntimeError):
    """$NPU_SYNCBN_CPU_ISA names no variant, or one this CPU cannot run."""


def _isa_from_env(lib) -> Optional[Exception]:
    name = os.environ.get(ISA_ENV, "").strip().lower()
    if name in ("", "auto"):
        return None
    if name not in ISA_NAMES:
        return IsaError(f"${ISA_ENV}={name!r}: expected one of auto, {', '.join(ISA_NAMES)}")
    if lib.nsb_select_isa(ISA_NAMES.index(name)) != 0:
        return IsaError(f"${ISA_ENV}={name}: this CPU cannot run the {name} kernels; it runs "
                        f"{', '.join(supported_isas(lib))} (unset ${ISA_ENV} for the best of them)")
    return None


def _load() -> Optional[ctypes.CDLL]:
    if not _tried:
        _load_once()
    if _isa_error is not None:
        raise _isa_error
    return _lib


def _load_once() -> None:
    global _lib, _tried, _openmp, _isa_error
    with _lock:
        if _tried:
            return
        try:
            from .. import twin_build

            path = os.environ.get("NPU_SYNCBN_CPU_LIB") or twin_build.build_cpu(quiet=True)
            lib = twin_build.load(path, _SIGNATURES)
            _openmp = bool(lib.nsb_openmp())
            _lib = lib
        except Exception:  # no compiler, read-only tree, bad library: the aten path serves
            _lib = None
        if _lib is not None:
            _isa_error = _isa_from_env(_lib)
        _tried = True


def supported_isas(lib=None) -> Tuple[str, ...]:
    """The kernel variants this CPU can run, baseline first (empty without the library)."""
    lib = lib or library_any()
    return () if lib is None else ISA_NAMES[: lib.nsb_isa_best() + 1]


def isa() -> Optional[str]:
    """The variant the kernels run ("baseline", "avx2" or "avx512"), or None without the library."""
    lib = library_any()
    return None if lib is None else ISA_NAMES[lib.nsb_isa()]


def wait_seconds() -> Optional[float]:
    """Seconds this process has spent waiting for other ranks at the
    shared-memory channel's rendezvous (all of them, since the library was
    loaded), or None without the library."""
    lib = library_any()
    if lib is None:
        return None
    out = ctypes.c_double(0.0)
    lib.nsb_wait_time(ctypes.addressof(out))
    return out.value


def select_isa(name: str) -> str:
    """Runs variant ``name`` from now on (tests compare the variants in one
    process); returns the one that ran before. IsaError when the CPU cannot run it."""
    lib = library_any()
    if lib is None:
        raise IsaError("the CPU kernel library is not available")
    if name not in ISA_NAMES:
        raise IsaError(f"isa {name!r}: expected one of {', '.join(ISA_NAMES)}")
    before = ISA_NAMES[lib.nsb_isa()]
    if lib.nsb_select_isa(ISA_NAMES.index(name)) != 0:
        raise IsaError(f"isa {name}: this CPU cannot run it; it runs {', '.join(supported_isas(lib))}")
    return before


def library() -> Optional[ctypes.CDLL]:
    """The loaded library, or None when it is unavailable or disabled by ``NPU_SYNCBN_CPU_KERNELS=aten``."""
    if _mode() == "aten":
        return None
    lib = library_any()
    if lib is not None and not _openmp and torch.get_num_threads() > 1:
        return None  # built without OpenMP: single-threaded kernels would lose aten's parallelism
    return lib


def library_any() -> Optional[ctypes.CDLL]:
    """The loaded library whatever $NPU_SYNCBN_CPU_KERNELS says (its
    shared-memory counters serve npu_syncbn/shm.py), or None."""
    return _load()


def available() -> bool:
    return library() is not None


def _mode() -> str:
    return os.environ.get(ENV, "").strip().lower()


def layout(x: Tensor) -> Optional[Tuple[int, int, int, int]]:
    """(layout, N, C, L) the kernels see ``x`` as, or None when they cannot take it."""
    if x.dtype not in _AUTO_DTYPES and not (x.dtype in DTYPE_CODES and _mode() == "fast"):
        return None
    if x.dim() < 2:
        return None
    c = x.shape[1]
    n = x.numel()
    if n == 0 or c == 0:
        return None
    if x.dim() == 2:
        if x.is_contiguous():
            return (NCL, 1, 1, n) if c == 1 else (NLC, n // c, c, 1)
        return None
    if x.is_contiguous():
        if c == 1:
            return NCL, 1, 1, n
        return NCL, x.shape[0], c, n // (x.shape[0] * c)
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d if x.dim() == 5 else None
    if fmt is not None and x.is_contiguous(memory_format=fmt):
        return (NCL, 1, 1, n) if c == 1 else (NLC, n // c, c, 1)
    return None


def _vec(t: Tensor) -> Tensor:
    """(C,) float32 contiguous (no copy when it already is)."""
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    return t if t.is_contiguous() else t.contiguous()


def _ptr(t: Optional[Tensor]):
    return None if t is None else t.data_ptr()


def stats(x: Tensor, eps: float) -> Optional[Tuple[Tensor, Tensor]]:
    """(mean, invstd) float32, or None."""
    lib = library()
    lay = layout(x) if lib is not None else None
    if lay is None:
        return None
    kind, n, c, l = lay
    C = x.shape[1]
    mean = torch.empty(C, dtype=torch.float32)
    invstd = torch.empty(C, dtype=torch.float32)
    rc = lib.nsb_stats(x.data_ptr(), DTYPE_CODES[x.dtype], kind, n, c, l, float(eps), mean.data_ptr(), invstd.data_ptr(),
                       torch.get_num_threads())
    return (mean, invstd) if rc == 0 else None


def elemt(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, invstd: Tensor) -> Optional[Tensor]:
    """(x - mean) * invstd * weight + bias in x's dtype and memory format, or None."""
    lib = library()
    lay = layout(x) if lib is not None else None
    if lay is None:
        return None
    kind, n, c, l = lay
    mean, invstd = _vec(mean), _vec(invstd)
    weight = None if weight is None else _vec(weight)
    bias = None if bias is None else _vec(bias)
    y = torch.empty_like(x)
    rc = lib.nsb_elemt(x.data_ptr(), y.data_ptr(), DTYPE_CODES[x.dtype], kind, n, c, l, mean.data_ptr(), invstd.data_ptr(),
                       _ptr(weight), _ptr(bias), torch.get_num_threads())
    return y if rc == 0 else None


def _pair_layout(grad_out: Tensor, x: Tensor):
    if grad_out.dtype != x.dtype:
        return None
    lay = layout(x)
    return lay if lay is not None and layout(grad_out) == lay else None


def backward_reduce(grad_out: Tensor, x: Tensor, mean: Tensor, invstd: Tensor):
    """(sum_dy, sum_dy_xmu, grad_weight, grad_bias), four separate float32
    tensors (grad_weight = sum_dy_xmu * invstd, grad_bias = sum_dy), or None."""
    lib = library()
    lay = _pair_layout(grad_out, x) if lib is not None else None
    if lay is None:
        return None
    kind, n, c, l = lay
    C = x.shape[1]
    mean, invstd = _vec(mean), _vec(invstd)
    out = [torch.empty(C, dtype=torch.float32) for _ in range(4)]  # outputs must not alias each other
    rc = lib.nsb_backward_reduce(grad_out.data_ptr(), x.data_ptr(), DTYPE_CODES[x.dtype], kind, n, c, l, mean.data_ptr(),
                                 invstd.data_ptr(), *(t.data_ptr() for t in out), torch.get_num_threads())
    return tuple(out) if rc == 0 else None


def _rows_of(t: Tensor, w: int, c: int) -> bool:
    """(W, C) float32 with contiguous columns (a slice of the gathered rows is fine)."""
    return t.dtype == torch.float32 and t.shape == (w, c) and (c == 1 or t.stride(1) == 1)


def gather_merge(mean: Tensor, invstd: Tensor, counts: Tensor, running_mean: Optional[Tensor],
                 running_var: Optional[Tensor], momentum: float, eps: float):
    """The gather op's merge of (W, C) per-rank rows in one C call: (mean,
    invstd) float32, the running stats updated in place; the int
    NO_POSITIVE_COUNT when no rank has a sample; None when the C path does
    not apply (dtypes other than float32, rows of mean and invstd with
    different strides, non-contiguous running stats)."""
    lib = library()
    if lib is None or mean.dim() != 2:
        return None
    w, c = mean.shape
    if not (_rows_of(mean, w, c) and _rows_of(invstd, w, c) and mean.stride(0) == invstd.stride(0)):
        return None
    if counts.dtype != torch.float32 or counts.shape != (w,):
        return None
    for t in (running_mean, running_var):
        if t is not None and (t.dtype != torch.float32 or not t.is_contiguous()):
            return None
    out_mean = torch.empty(c, dtype=torch.float32)
    out_invstd = torch.empty(c, dtype=torch.float32)
    rc = lib.nsb_gather_merge(mean.data_ptr(), invstd.data_ptr(), mean.stride(0), counts.data_ptr(), counts.stride(0),
                              w, c, float(eps), _ptr(running_mean), _ptr(running_var), float(momentum),
                              out_mean.data_ptr(), out_invstd.data_ptr())
    if rc == NO_POSITIVE_COUNT:
        return rc
    return (out_mean, out_invstd) if rc == 0 else None


def backward_elemt(grad_out: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Optional[Tensor],
                   sum_dy: Tensor, sum_dy_xmu: Tensor, count: float) -> Optional[Tensor]:
    """dx = a*dy + b*(x - mean) + shift (see cpu.backward_elemt_coefficients), or None."""
    lib = library()
    lay = _pair_layout(grad_out, x) if lib is not None else None
    if lay is None:
        return None
    kind, n, c, l = lay
    mean, invstd, sum_dy, sum_dy_xmu = _vec(mean), _vec(invstd), _vec(sum_dy), _vec(sum_dy_xmu)
    weight = None if weight is None else _vec(weight)
    dx = torch.empty_like(x)
    rc = lib.nsb_backward_elemt(grad_out.data_ptr(), x.data_ptr(), dx.data_ptr(), DTYPE_CODES[x.dtype], kind, n, c, l,
                                mean.data_ptr(), invstd.data_ptr(), _ptr(weight), sum_dy.data_ptr(),
                                sum_dy_xmu.data_ptr(), float(count), torch.get_num_threads())
    return dx if rc == 0 else None
