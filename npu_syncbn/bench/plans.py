"""What SyncBatchNorm sends per step: the collective plan the bench replays,
the ring model of bytes per rank, and a trace of the collectives one step
really issues (checked against the plan in every run)."""
from __future__ import annotations

from typing import List, Optional, Tuple

BYTES_MODEL = (
    "bytes/rank: ring model, not measured: all_gather of K values per rank sends "
    "(W-1)/W * W*K = (W-1)*K values per rank; all_reduce of K values (reduce-scatter + "
    "all-gather) sends 2*(W-1)/W*K values per rank; 0 for W=1"
)


def resolve_mode(sync_mode: str, world_size: int, device_type: str = "cpu") -> str:
    """The forward mode SyncBatchNorm runs with ("auto" resolved)."""
    import torch

    from ..modules import resolve_sync_mode

    return resolve_sync_mode(sync_mode, world_size, torch.device(device_type))


def fingerprint_check_enabled(device_type: str = "cpu") -> bool:
    """Whether SyncBatchNorm runs its fixed-size fingerprint all_reduce before
    the statistics collective in the steps the bench times (check level
    "strict" after a layer's first call, see function.check_level)."""
    import torch

    from .. import function

    return function.check_level(torch.device(device_type), first_call=False) == "strict"


def collective_plan(
    c: int, mode: str, stats_dtype: str = "float32", device_type: str = "cpu", fingerprint_check: Optional[bool] = None
) -> List[Tuple[str, str, int, str]]:
    """The collectives SyncBatchNorm issues per training step for C channels
    in forward ``mode`` ("allgather" or "allreduce", see :func:`resolve_mode`):
    a list of (phase, collective, values per rank, dtype name), in call order.

    This is the one place to update when npu_syncbn/function.py changes what it
    sends; the benchmark checks it against one traced step (and replays the
    traced collectives, saying so) when they disagree. Currently:

    * forward, when fingerprints are checked (on CPU a layer's first call by
      default, every call with NPU_SYNCBN_CHECK=strict): all_reduce of
      [f | f²] = 2 int64 values (function.start_agreement_check);
    * forward, allgather: all_gather of [fingerprint (4) | mean (C) | invstd (C) | count (1)]
      = 2C + 5 values in the stats dtype;
    * forward, allreduce: all_reduce of [check (2) | n (1) | n·(m−s) (C) | M2 + n·(m−s)² (C)]
      = 2C + 3 values, float64 on CPU (the stats dtype on accelerators);
    * backward: all_reduce of [sum_dy (C) | sum_dy_xmu (C)] = 2C values in the stats dtype.
    """
    if fingerprint_check is None:
        fingerprint_check = fingerprint_check_enabled(device_type)
    plan = [("forward", "all_reduce", 2, "int64")] if fingerprint_check else []
    if mode == "allgather":
        plan.append(("forward", "all_gather", 2 * c + 5, stats_dtype))
    elif mode == "allreduce":
        plan.append(("forward", "all_reduce", 2 * c + 3, "float64" if device_type == "cpu" else stats_dtype))
    else:
        raise ValueError(f"unknown sync mode {mode!r}")
    plan.append(("backward", "all_reduce", 2 * c, stats_dtype))
    return plan


def modelled_bytes_per_rank(c: int, mode: str, stats_dtype: str, world_size: int, device_type: str = "cpu") -> float:
    """Bytes one rank sends per step in ``mode`` (ring model of :func:`collective_plan`)."""
    import torch

    return sum(
        ring_bytes_per_rank(kind, n, torch.empty(0, dtype=getattr(torch, dt)).element_size(), world_size)
        for _, kind, n, dt in collective_plan(c, mode, stats_dtype, device_type)
    )


def ring_bytes_per_rank(collective: str, numel: int, itemsize: int, world_size: int) -> float:
    """Bytes one rank sends for one collective under the ring model.

    all_gather, K values per rank: each rank forwards W-1 blocks of K values,
    i.e. (W-1)/W of the W*K gathered values: (W-1)*K*itemsize.
    all_reduce of K values: ring reduce-scatter then ring all-gather, each
    sending (W-1)/W*K values: 2*(W-1)/W*K*itemsize.
    (gloo picks its own algorithms; this is the textbook lower bound.)
    """
    w = world_size
    if w <= 1:
        return 0.0
    if collective == "all_gather":
        return float((w - 1) * numel * itemsize)
    if collective == "all_reduce":
        return 2.0 * (w - 1) / w * numel * itemsize
    raise ValueError(f"unknown collective {collective!r}")



class _CollectiveTrace:
    """Records (phase, collective, numel, dtype) of the collectives issued
    inside the block: those of npu_syncbn.comm (whatever carries them: gloo or
    the shared-memory channel) and those of the fused CPU step (cpu_step.py,
    which exchanges over the channel from C); set ``phase`` as the step goes on."""

    NAMES = {"all_gather_rows": "all_gather", "all_reduce_sum": "all_reduce", "all_reduce_sum_start": "all_reduce"}
    # cpu_step function -> (collective, float32 values it sends for C channels, position of the input argument)
    FUSED = {"forward": ("all_gather", "forward_payload", 0), "backward": ("all_reduce", "backward_payload", 1)}

    def __init__(self) -> None:
        self.calls: List[Tuple[str, str, int, str]] = []
        self.phase = "forward"

    def _wrap(self, original, kind):
        def wrapper(buf, *args, **kwargs):
            self.calls.append((self.phase, kind, buf.numel(), str(buf.dtype).replace("torch.", "")))
            return original(buf, *args, **kwargs)

        return wrapper

    def _wrap_fused(self, original, kind, payload, input_at):
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if result is not None:  # the step ran fused: it sent one payload of float32
                self.calls.append((self.phase, kind, payload(args[input_at].shape[1]), "float32"))
            return result

        return wrapper

    def __enter__(self):
        from .. import comm, cpu_step

        self._saved = [(comm, name, getattr(comm, name)) for name in self.NAMES]
        self._saved += [(cpu_step, name, getattr(cpu_step, name)) for name in self.FUSED]
        for name, kind in self.NAMES.items():
            setattr(comm, name, self._wrap(getattr(comm, name), kind))
        for name, (kind, payload, input_at) in self.FUSED.items():
            setattr(cpu_step, name, self._wrap_fused(getattr(cpu_step, name), kind, getattr(cpu_step, payload), input_at))
        return self

    def __exit__(self, *exc):
        for owner, name, original in self._saved:
            setattr(owner, name, original)
        return False
