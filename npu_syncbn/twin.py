"""ctypes front of the AscendC kernels compiled for the CPU (the "twin").

The kernel sources in ``op_kernels/kernels`` run unmodified on emulated vector
cores (``op_kernels/twin``): same tiling, same UB plan, same GM traffic as on an
NPU, with every AscendC rule checked. Each function here mirrors the aten op of
the same name on CPU tensors (the library is built on first use):

* ``batch_norm_stats(x, eps) -> (mean, invstd)``
* ``batch_norm_gather_stats(input, mean, invstd, running_mean, running_var, momentum, eps, counts)
  -> (mean, invstd)``; running stats updated in place
* ``batch_norm_elemt(x, weight, bias, mean, invstd, eps) -> y``
* ``batch_norm_backward_reduce(grad_out, x, mean, invstd, weight, input_g, weight_g, bias_g)
  -> (sum_dy, sum_dy_xmu, grad_weight, grad_bias)``, None for outputs not asked for
* ``batch_norm_backward_elemt(grad_out, x, mean, invstd, weight, sum_dy, sum_dy_xmu, count) -> dx``

``x`` is (N, C, *) of float32, float16 or bfloat16; per-channel tensors are
(C,), stats come back float32. The layout comes from x's strides, as the
device's host side (op_kernels/host/bn_ops.h) chooses it: contiguous NC* runs
the row kernels; channels_last, channels_last_3d and 2-D (N, C) input run the
C-last kernels (``*_clast``) with no layout copy; anything else not dense takes
one ``.contiguous()`` copy. Outputs keep x's memory format.
Every function takes ``block_dim`` (emulated cores: 1 up to the vector cores of
the emulated SoC, 48 on Ascend910B2, the default; ``set_soc`` or
``NPU_SYNCBN_SOC`` selects another, e.g. Ascend910B4 with 40, and a launch
above its cores is a :class:`TwinError`). ``traffic()`` gives the GM bytes and
burst sizes of the last op (both launches of a C-last reducing op);
:mod:`npu_syncbn.twin_timing` turns on the Ascend timing model for these same
ops and reads back the modelled time of each launch. A kernel that breaks a rule raises :class:`TwinError`. Needs
neither torch_npu nor an NPU.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from . import twin_build
from .ops import checks

__all__ = [
    "TwinError",
    "batch_norm_stats",
    "batch_norm_gather_stats",
    "batch_norm_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_backward_elemt",
    "traffic",
    "burst_summary",
    "layout_of",
    "library",
    "set_soc",
    "set_auto_sync",
    "set_vector_auto_sync",
    "soc",
]

MAX_BLOCK_DIM = 48
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_OUT_SUMS, _OUT_GRAD_WEIGHT, _OUT_GRAD_BIAS = 1, 2, 4
# GM buffers that are not op arguments (also "workspace.*": the C-last partial
# rows between an op's two launches): excluded from traffic()["read"/"written"].
_INTERNAL = ("workspace", "tiling")
ROW, CLAST = "row", "clast"


class TwinError(RuntimeError):
    """A kernel broke an AscendC rule in the twin (UB overflow, misaligned copy,
    queue imbalance, out-of-bounds access, SyncAll imbalance). The message names
    the kernel, the core and the rule; ``kernel`` and ``rule`` hold them."""

    def __init__(self, message: str):
        super().__init__(message)
        self.kernel = message.split("'")[1] if message.count("'") >= 2 else ""
        tail = message.split(": ", 1)[1] if ": " in message else message
        self.rule = tail.split(":", 1)[0].strip()


_lib = None
_lock = threading.RLock()
_last: Dict[str, object] = {}

_P = ctypes.c_void_p
_U32, _U64, _F = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_float
_SIGNATURES = {
    "twin_batch_norm_stats": [_P, _U32, _U64, _U64, _U64, _F, _U32, _P, _P],
    "twin_batch_norm_gather_stats_with_counts": [_P, _P, _P, _U64, _U64, _P, _P, _F, _F, _U32, _P, _P],
    "twin_batch_norm_elemt": [_P, _U32, _U64, _U64, _U64, _P, _P, _P, _P, _U32, _P],
    "twin_batch_norm_backward_reduce": [_P, _P, _U32, _U64, _U64, _U64, _P, _P, _U32, _U32, _P, _P, _P, _P],
    "twin_batch_norm_backward_elemt": [_P, _P, _U32, _U64, _U64, _U64, _P, _P, _P, _P, _P, _P, _U64, _U32, _P],
    "twin_row_tiling": [_U32, _U64, _U64, _U64, _U32, _U32, _U32, _P],
    "twin_tiling_cover": [_U32, _U64, _U64, _U64, _U32, _U32, _U32, _P],
    "twin_gather_tiling": [_U64, _U64, _U32, _U32, _P],
    "twin_batch_norm_stats_clast": [_P, _U32, _U64, _U64, _F, _U32, _P, _P],
    "twin_batch_norm_elemt_clast": [_P, _U32, _U64, _U64, _P, _P, _P, _P, _U32, _P],
    "twin_batch_norm_backward_reduce_clast": [_P, _P, _U32, _U64, _U64, _P, _P, _U32, _U32, _P, _P, _P, _P],
    "twin_batch_norm_backward_elemt_clast": [_P, _P, _U32, _U64, _U64, _P, _P, _P, _P, _P, _P, _U64, _U32, _P],
    "twin_clast_tiling": [_U32, _U64, _U64, _U32, _U32, _U32, _P],
    "twin_tiling_sweep": [_U32, _U32, _U32, _U32, _P, _U64, _P, _U64],
    "twin_traffic_bursts": [ctypes.c_int, ctypes.c_int, _P, _P],
    "twin_run_test_kernel": [ctypes.c_char_p, _U32],
    "twin_set_soc": [ctypes.c_char_p],
    "twin_set_auto_sync": [ctypes.c_int],
    "twin_set_vector_auto_sync": [ctypes.c_int],
    "twin_traffic_get": [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, _P, _P],
}


def library() -> ctypes.CDLL:
    """The loaded twin library, built with g++ on first use if missing or stale."""
    global _lib
    with _lock:
        if _lib is None:
            path = os.environ.get("NPU_SYNCBN_TWIN_LIB") or twin_build.build_twin(quiet=True)
            lib = twin_build.load(path, _SIGNATURES)
            lib.twin_last_error.restype = ctypes.c_char_p
            lib.twin_last_block_dim.restype = ctypes.c_uint32
            lib.twin_traffic_count.restype = ctypes.c_int
            lib.twin_soc_name.restype = ctypes.c_char_p
            lib.twin_soc_cores.restype = ctypes.c_uint32
            lib.twin_soc_ub_bytes.restype = ctypes.c_uint32
            _lib = lib
    return _lib


def set_soc(name: str = "") -> None:
    """Emulate SoC ``name`` (e.g. ``"Ascend910B4"``; a family member such as
    ``"Ascend910_9391"`` takes its family's entry): launches are checked against
    its vector-core count and UB size. ``""`` goes back to ``NPU_SYNCBN_SOC``,
    else Ascend910B2. Raises ValueError for a SoC the table does not know."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a SoC name string such as 'Ascend910B4', got {type(name).__name__}")
    lib = library()
    with _lock:
        if lib.twin_set_soc(name.encode()) != 0:
            raise ValueError(f"unknown SoC {name!r}: expected one of Ascend910B1..B4 or Ascend910_93xx")


def set_auto_sync(on: bool) -> None:
    """Whether the twin's pipe model takes bisheng's ``--cce-auto-sync`` as on
    (the default, as CANN's ascendc_library builds: scalar GetValue/SetValue are
    ordered against the other pipes by the compiler) or off (every cross-pipe
    dependency, the scalar ones included, needs a barrier or an event pair)."""
    library().twin_set_auto_sync(1 if on else 0)


def set_vector_auto_sync(on: bool) -> None:
    """Whether the pipe model takes the compiler as ordering a vector
    instruction after an earlier one whose output it reads (the
    ``PipeBarrier<PIPE_V>`` that ``--cce-auto-sync`` inserts; default on). Off,
    such a read with no ``PipeBarrier<PIPE_V>`` in between is a hazard: the
    kernels rely on the compiler for these, and say so where they are built."""
    library().twin_set_vector_auto_sync(1 if on else 0)


def soc() -> Dict[str, object]:
    """The emulated SoC: ``name``, ``vector_cores``, ``ub_bytes``."""
    lib = library()
    return {"name": lib.twin_soc_name().decode(), "vector_cores": int(lib.twin_soc_cores()),
            "ub_bytes": int(lib.twin_soc_ub_bytes())}


def _check(rc: int) -> None:
    lib = library()
    msg = lib.twin_last_error().decode()
    if rc == 1:
        raise TwinError(msg)
    if rc != 0:
        raise ValueError(msg)


def _internal(name: str) -> bool:
    return name in _INTERNAL or name.startswith("workspace.")


def burst_summary(hist: Dict[int, int]) -> Dict[str, int]:
    """``count``, ``smallest`` and (lower) ``median`` bytes of a burst histogram {bytes: how many}."""
    total = sum(hist.values())
    if total == 0:
        return {"count": 0, "smallest": 0, "median": 0}
    seen, median = 0, 0
    for size in sorted(hist):
        seen += hist[size]
        if 2 * seen >= total:
            median = size
            break
    return {"count": total, "smallest": min(hist), "median": median}


def _record_traffic() -> None:
    lib = library()
    buffers = {}
    name = ctypes.create_string_buffer(64)
    read, written = ctypes.c_uint64(), ctypes.c_uint64()
    sizes, counts = (ctypes.c_uint64 * 256)(), (ctypes.c_uint64 * 256)()
    everything: Dict[int, int] = {}
    per_buffer = {}
    for i in range(lib.twin_traffic_count()):
        lib.twin_traffic_get(i, name, 64, ctypes.byref(read), ctypes.byref(written))
        k = min(lib.twin_traffic_bursts(i, 256, sizes, counts), 256)
        hist = {int(sizes[j]): int(counts[j]) for j in range(k)}
        key = name.value.decode()
        buffers[key] = {"read": read.value, "written": written.value}
        if hist and key != "tiling":
            per_buffer[key] = {**burst_summary(hist), "hist": hist}
            for size, n in hist.items():
                everything[size] = everything.get(size, 0) + n
    args = {k: v for k, v in buffers.items() if not _internal(k)}
    _last.clear()
    _last.update(
        read=sum(v["read"] for v in args.values()),
        written=sum(v["written"] for v in args.values()),
        buffers=buffers,
        bursts=burst_summary(everything),
        buffer_bursts=per_buffer,
        block_dim=int(lib.twin_last_block_dim()),
    )


def traffic() -> Dict[str, object]:
    """GM traffic of the last op (all its launches): ``read`` / ``written``
    bytes summed over the op's arguments; ``buffers``: ``read`` / ``written``
    per GM buffer (workspace and the C-last partial rows ``workspace.*``
    included); ``bursts``: ``count``, ``smallest`` and ``median`` bytes of the
    bursts (contiguous GM runs of one copy) over every buffer but the tiling;
    ``buffer_bursts``: the same per buffer, plus ``hist`` {bytes: count};
    ``block_dim``, the cores the (first) launch used."""
    return dict(_last)


def _launch(fn_name: str, *args) -> None:
    lib = library()
    with _lock:  # the library keeps last-error and traffic globals
        rc = getattr(lib, fn_name)(*args)
        if rc == 0:
            _record_traffic()
    _check(rc)


# ---------------------------------------------------------------- argument checks
def _block_dim(block_dim) -> int:
    if isinstance(block_dim, bool) or not isinstance(block_dim, int) or not 1 <= block_dim <= MAX_BLOCK_DIM:
        raise ValueError(f"block_dim must be an int in 1..{MAX_BLOCK_DIM}, got {block_dim!r}")
    return block_dim


def layout_of(x: Tensor) -> Tuple[str, Tensor]:
    """(layout, tensor the kernels read), the rule of bn_ops.h's Choose: C
    innermost and dense (channels_last, channels_last_3d, 2-D) -> C-last with
    no copy; contiguous NC* -> row; when x is both (a dim of size 1), the
    layout with the longer contiguous run; anything else -> one
    ``.contiguous()`` copy, then the same rule."""
    c = x.shape[1]
    inner = x.numel() // max(1, x.shape[0] * c)
    clast, row = x.movedim(1, -1).is_contiguous(), x.is_contiguous()
    if clast and (not row or c >= inner):
        return CLAST, x
    if row:
        return ROW, x
    return layout_of(x.contiguous())


def _as_layout(t: Tensor, layout: str) -> Tensor:
    """t in the memory order of `layout` (itself when it already is)."""
    return t.movedim(1, -1).contiguous().movedim(-1, 1) if layout == CLAST else t.contiguous()


def _input(x, name: str = "input") -> Tuple[Tensor, int, Tuple[int, int, int], str]:
    """checks.check_input, narrowed to the twin: its kernels take no float64 (an
    (N, C, *) tensor of another dtype is refused naming the twin's dtypes), and
    only CPU tensors. Returns x as the kernels read it, its BnDtype, (N, C,
    inner) and the layout."""
    if isinstance(x, Tensor) and x.dim() >= 2 and x.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {x.dtype}")
    c = checks.check_input(x, name)
    if x.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor for the twin, got device {x.device}")
    n = x.shape[0]
    inner = 1
    for s in x.shape[2:]:
        inner *= s
    layout, x = layout_of(x)
    return x, _DTYPES[x.dtype], (n, c, inner), layout


def _like(t, ref: Tensor, name: str, ref_name: str, layout: str = ROW) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.shape != ref.shape or t.dtype != ref.dtype:
        raise ValueError(f"{name} must match {ref_name}: shape {tuple(ref.shape)} and dtype {ref.dtype}, "
                         f"got {tuple(t.shape)} {t.dtype}")
    return _as_layout(t, layout)


def _vec(t, c: int, name: str, optional: bool = False) -> Optional[Tensor]:
    """A per-channel (C,) tensor as contiguous float32 (None stays None if optional)."""
    if t is None:
        if optional:
            return None
        raise TypeError(f"{name} is required: a (C,) = ({c},) tensor")
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({c},), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if tuple(t.shape) != (c,):
        raise ValueError(f"{name} must have shape (C,) = ({c},), got {tuple(t.shape)}")
    return t.detach().to(torch.float32).contiguous()


def _eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")
    return float(eps)


def _ptr(t: Optional[Tensor]):
    return None if t is None else t.data_ptr()


# ---------------------------------------------------------------- the five ops
def batch_norm_stats(x: Tensor, eps: float, *, block_dim: int = 8) -> Tuple[Tensor, Tensor]:
    """Per-channel (mean, invstd) of x (N, C, *); invstd = 1/sqrt(biased var + eps).
    Both float32 (C,). An empty x gives mean 0 and invstd 1/sqrt(eps)."""
    cores = _block_dim(block_dim)
    x, dtype, (n, c, inner), layout = _input(x)
    eps = _eps(eps)
    mean = torch.zeros(c, dtype=torch.float32)
    invstd = torch.full((c,), eps, dtype=torch.float32).rsqrt()
    if x.numel() == 0:
        return mean, invstd
    if layout == CLAST:
        _launch("twin_batch_norm_stats_clast", x.data_ptr(), dtype, n * inner, c, eps, cores, mean.data_ptr(),
                invstd.data_ptr())
    else:
        _launch("twin_batch_norm_stats", x.data_ptr(), dtype, n, c, inner, eps, cores, mean.data_ptr(),
                invstd.data_ptr())
    return mean, invstd


def batch_norm_gather_stats(input: Tensor, mean: Tensor, invstd: Tensor, running_mean: Optional[Tensor],
                            running_var: Optional[Tensor], momentum: float, eps: float, counts: Tensor, *,
                            block_dim: int = 8) -> Tuple[Tensor, Tensor]:
    """Global (mean, invstd), float32 (C,), from per-rank rows of mean / invstd
    (W, C) and per-rank counts (W,) (Chan's merge). running_mean / running_var
    (C,), if given, are updated in place with momentum; running_var gets the
    unbiased variance var * N / (N - 1). ``input`` only supplies C (as in aten)."""
    cores = _block_dim(block_dim)
    if not isinstance(input, Tensor) or input.dim() < 2:
        raise ValueError("input must be a tensor of shape (N, C, *)")
    c = input.shape[1]
    for name, t in (("mean", mean), ("invstd", invstd)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[1] != c:
            raise ValueError(f"{name} must have shape (W, C) = (W, {c}), got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    world = mean.shape[0]
    if invstd.shape[0] != world:
        raise ValueError(f"invstd must have shape ({world}, {c}) like mean, got {tuple(invstd.shape)}")
    if not isinstance(counts, Tensor) or counts.numel() != world:
        raise ValueError(f"counts must be a tensor of {world} per-rank counts (one per row of mean)")
    if world == 0:
        raise ValueError("mean must have at least one row (W >= 1)")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
        raise TypeError(f"momentum must be a float, got {momentum!r}")
    eps = _eps(eps)
    m32 = mean.detach().to(torch.float32).contiguous()
    s32 = invstd.detach().to(torch.float32).contiguous()
    n32 = counts.detach().reshape(-1).to(torch.float32).contiguous()
    rm = _vec(running_mean, c, "running_mean", optional=True)
    rv = _vec(running_var, c, "running_var", optional=True)
    mean_out = torch.empty(c, dtype=torch.float32)
    invstd_out = torch.empty(c, dtype=torch.float32)
    if c > 0:
        _launch("twin_batch_norm_gather_stats_with_counts", m32.data_ptr(), s32.data_ptr(), n32.data_ptr(), world, c,
                _ptr(rm), _ptr(rv), float(momentum), eps, cores, mean_out.data_ptr(), invstd_out.data_ptr())
    with torch.no_grad():  # in place, in the caller's dtype
        if running_mean is not None:
            running_mean.copy_(rm)
        if running_var is not None:
            running_var.copy_(rv)
    return mean_out, invstd_out


def batch_norm_elemt(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, invstd: Tensor,
                     eps: float, *, block_dim: int = 8) -> Tensor:
    """y = (x - mean) * invstd * weight + bias per channel; y has x's dtype and
    shape and memory format. ``eps`` is unused, as in aten (invstd already has it)."""
    cores = _block_dim(block_dim)
    x, dtype, (n, c, inner), layout = _input(x)
    _eps(eps)
    w, b = _vec(weight, c, "weight", True), _vec(bias, c, "bias", True)
    m, s = _vec(mean, c, "mean"), _vec(invstd, c, "invstd")
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    if layout == CLAST:
        _launch("twin_batch_norm_elemt_clast", x.data_ptr(), dtype, n * inner, c, _ptr(w), _ptr(b), m.data_ptr(),
                s.data_ptr(), cores, y.data_ptr())
    else:
        _launch("twin_batch_norm_elemt", x.data_ptr(), dtype, n, c, inner, _ptr(w), _ptr(b), m.data_ptr(),
                s.data_ptr(), cores, y.data_ptr())
    return y


def batch_norm_backward_reduce(grad_out: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Optional[Tensor],
                               input_g: bool, weight_g: bool, bias_g: bool, *, block_dim: int = 8):
    """(sum_dy, sum_dy_xmu, grad_weight, grad_bias) per channel: sum(dy),
    sum(dy * (x - mean)), sum_dy_xmu * invstd, sum_dy. sum_dy / sum_dy_xmu are
    float32 (C,) when input_g, grad_weight / grad_bias (C,) in weight's dtype
    (float32 without weight) when weight_g / bias_g; outputs not asked for are
    None, like aten's undefined tensors."""
    cores = _block_dim(block_dim)
    x, dtype, (n, c, inner), layout = _input(x)
    dy = _like(grad_out, x, "grad_out", "input", layout)
    m, s = _vec(mean, c, "mean"), _vec(invstd, c, "invstd")
    _vec(weight, c, "weight", True)
    mask = (_OUT_SUMS if input_g else 0) | (_OUT_GRAD_WEIGHT if weight_g else 0) | (_OUT_GRAD_BIAS if bias_g else 0)
    outs = [torch.zeros(c, dtype=torch.float32) for _ in range(4)]
    if x.numel() > 0 and mask and layout == CLAST:
        _launch("twin_batch_norm_backward_reduce_clast", dy.data_ptr(), x.data_ptr(), dtype, n * inner, c,
                m.data_ptr(), s.data_ptr(), mask, cores, *[o.data_ptr() for o in outs])
    elif x.numel() > 0 and mask:
        _launch("twin_batch_norm_backward_reduce", dy.data_ptr(), x.data_ptr(), dtype, n, c, inner, m.data_ptr(),
                s.data_ptr(), mask, cores, *[o.data_ptr() for o in outs])
    wd = weight.dtype if weight is not None else torch.float32
    sum_dy, sum_dy_xmu, grad_weight, grad_bias = outs
    return (
        sum_dy if input_g else None,
        sum_dy_xmu if input_g else None,
        grad_weight.to(wd) if weight_g else None,
        grad_bias.to(wd) if bias_g else None,
    )


def batch_norm_backward_elemt(grad_out: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Optional[Tensor],
                              sum_dy: Tensor, sum_dy_xmu: Tensor, count: Tensor, *, block_dim: int = 8) -> Tensor:
    """dx = (dy - sum_dy/N - (x - mean) * invstd^2 * sum_dy_xmu/N) * invstd * weight
    with N = count.sum() (count: per-rank counts, (W,)); dx has dy's dtype."""
    cores = _block_dim(block_dim)
    x, dtype, (n, c, inner), layout = _input(x)
    dy = _like(grad_out, x, "grad_out", "input", layout)
    m, s = _vec(mean, c, "mean"), _vec(invstd, c, "invstd")
    w = _vec(weight, c, "weight", True)
    sdy, sxmu = _vec(sum_dy, c, "sum_dy"), _vec(sum_dy_xmu, c, "sum_dy_xmu")
    if not isinstance(count, Tensor) or count.numel() < 1:
        raise ValueError("count must be a tensor of per-rank element counts, shape (W,) with W >= 1")
    cnt = count.detach().reshape(-1).to(torch.float32).contiguous()
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx
    args = (m.data_ptr(), s.data_ptr(), _ptr(w), sdy.data_ptr(), sxmu.data_ptr(), cnt.data_ptr(), cnt.numel(), cores,
            dx.data_ptr())
    if layout == CLAST:
        _launch("twin_batch_norm_backward_elemt_clast", dy.data_ptr(), x.data_ptr(), dtype, n * inner, c, *args)
    else:
        _launch("twin_batch_norm_backward_elemt", dy.data_ptr(), x.data_ptr(), dtype, n, c, inner, *args)
    return dx
